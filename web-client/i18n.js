// User-facing text, zh-CN first. Each entry is [zh-CN, en]; "{name}" is a parameter.
//
// Elements carry their text key in data-i18n (text), data-i18n-label (aria-label + title), or a
// literal pair in data-zh / data-en (server messages). applyI18n() re-renders all of them, so a
// language switch needs no other bookkeeping.

const STRINGS = {
  'app.title': ['桥 · 远程庭审、调解与接访', 'Qiao · remote hearings, mediation and petition reception'],
  'lang.switch': ['English', '中文'],
  'lang.switch_label': ['Switch to English', '切换到中文'],

  'landing.heading': ['请打开邀请链接', 'Please open your join link'],
  'landing.body': [
    '请使用工作人员通过短信、微信或二维码发给您的邀请链接进入。直接打开本网址无法加入会议。',
    'Use the join link that staff sent you by text message, WeChat or QR code. This address alone cannot join a session.',
  ],
  'landing.help': [
    '如果没有收到链接，或链接已过期，请联系法院、调解中心或信访接待工作人员。',
    'If you have no link, or it has expired, please contact the court, mediation centre or petition office staff.',
  ],

  'prejoin.heading': ['加入前检查', 'Before you join'],
  'prejoin.hint': [
    '请确认能看到自己的画面，说话时音量条会跳动。',
    'Check that you can see yourself and that the level bar moves when you speak.',
  ],
  'prejoin.camera': ['摄像头', 'Camera'],
  'prejoin.mic': ['麦克风', 'Microphone'],
  'prejoin.level': ['麦克风音量', 'Microphone level'],
  'prejoin.join': ['加入', 'Join'],
  'prejoin.starting': ['正在打开摄像头和麦克风…', 'Opening camera and microphone…'],
  'prejoin.no_preview': ['无摄像头画面', 'No camera picture'],

  // Before joining: the participant's own steps (steps.js)
  'steps.loading': ['正在核对邀请信息…', 'Checking your invitation…'],
  'steps.retry': ['重试', 'Try again'],
  'steps.failed_title': ['暂时无法继续', 'Cannot continue right now'],
  'steps.failed': [
    '服务器暂时无法处理，请稍后重试；如仍有问题，请联系工作人员。',
    'The server could not handle this right now. Try again shortly; if it keeps happening, contact staff.',
  ],
  'steps.network': ['网络连接失败，请检查网络后重试。', 'Could not reach the server. Check your network and try again.'],
  'steps.bad_link_title': ['邀请链接无效', 'Join link not valid'],
  'steps.bad_link': [
    '邀请链接无效或已过期。请向工作人员索取新的邀请链接。',
    'This join link is not valid or has expired. Please ask staff for a new link.',
  ],
  'steps.progress_identity': ['身份核验', 'Identity'],
  'steps.progress_consent': ['确认同意', 'Consent'],
  'steps.progress_prejoin': ['设备检查', 'Devices'],
  'identity.heading': ['身份核验', 'Identity check'],
  'identity.why': [
    '根据《人民法院在线诉讼规则》第七条，需核验身份。请填写与工作人员登记一致的姓名和身份证号。',
    'Identity check required by the online litigation rules, Art. 7. Enter your name and ID card number as registered by staff.',
  ],
  'identity.name': ['姓名', 'Full name'],
  'identity.id_number': ['身份证号', 'ID card number'],
  'identity.submit': ['核验', 'Verify'],
  'identity.checking': ['正在核验…', 'Checking…'],
  'identity.fill_both': ['请填写姓名和身份证号。', 'Please enter your name and ID card number.'],
  'identity.locked': [
    '核验失败次数过多，此邀请链接已无法再核验。请联系工作人员重新发送邀请。',
    'Too many failed attempts: this join link can no longer be verified. Please contact staff for a new invitation.',
  ],
  'identity.privacy': ['身份证号仅用于本次核对，系统不保存号码本身。', 'Your ID number is used only for this check; the number itself is not stored.'],
  'consent.heading': ['参加前确认', 'Before you take part'],
  'consent.why': [
    '根据《人民法院在线诉讼规则》第四条，以在线方式进行须经您同意。本次会话将全程录音录像。',
    'Under the online litigation rules, Art. 4, taking part online needs your agreement. This session is recorded in full.',
  ],
  'consent.proceeding': ['同意以在线方式参加本次程序', 'I agree to take part online'],
  'consent.recording': ['知悉并同意本次会话全程录音录像', 'I know and agree that this session is recorded in full'],
  'consent.submit': ['继续', 'Continue'],
  'consent.decline': [
    '如不同意以在线方式参加，请联系工作人员另行安排。',
    'If you do not agree to take part online, please contact staff to make other arrangements.',
  ],

  'device.none': ['（无可用设备）', '(no device)'],
  'device.camera_n': ['摄像头 {n}', 'Camera {n}'],
  'device.mic_n': ['麦克风 {n}', 'Microphone {n}'],

  'media.no_video': ['未能打开摄像头，将只使用麦克风加入。', 'The camera could not be opened; you will join with the microphone only.'],
  'media.no_audio': ['未能打开麦克风，其他人将听不到您的声音。', 'The microphone could not be opened; others will not hear you.'],
  'media.none': [
    '未能打开摄像头和麦克风，将以仅收看模式加入（其他人看不到、听不到您）。',
    'Neither camera nor microphone could be opened; you will join receive-only (others cannot see or hear you).',
  ],
  'media.denied': ['请在浏览器设置中允许本网站使用摄像头和麦克风，然后刷新页面。', 'Allow this site to use the camera and microphone in the browser settings, then reload the page.'],
  'media.in_use': ['设备可能正被其他程序占用，请关闭其他视频软件后刷新页面。', 'The device may be in use by another program; close other video apps and reload the page.'],
  'media.not_found': ['未找到可用的设备。', 'No usable device was found.'],
  'media.insecure': [
    '此页面不是通过安全连接（HTTPS）打开的，浏览器不允许使用摄像头和麦克风。',
    'This page was not opened over a secure connection (HTTPS), so the browser does not allow the camera and microphone.',
  ],

  'state.connecting': ['连接中', 'Connecting'],
  'state.connected': ['已连接', 'Connected'],
  'state.reconnecting': ['重新连接中', 'Reconnecting'],
  'state.disconnected': ['已断开', 'Disconnected'],
  'state.left': ['已离开', 'Left'],
  // The recording's state (recording_status), in the top bar for everyone
  'rec.recording': ['录音录像中', 'Recording'],
  'rec.paused': ['录音录像已暂停（{reason}）', 'Recording paused ({reason})'],
  'rec.paused_plain': ['录音录像已暂停', 'Recording paused'],
  'rec.degraded': ['录音录像中 · 有异常', 'Recording · problem'],
  'rec.failed': ['录像故障', 'Recording failed'],
  'rec.final': ['录音录像已完成', 'Recording complete'],
  'rec.label_recording': ['本次会话正在全程录音录像', 'This session is being recorded in full'],
  'rec.label_paused': ['录音录像已暂停，暂停事由：{reason}', 'The recording is paused; reason: {reason}'],
  'rec.label_problem': ['录音录像出现问题，详见提示', 'The recording has a problem: see the notice'],
  'rec.label_final': ['录音录像已完成', 'The recording is complete'],
  'rec.banner_degraded': ['录像提示', 'Recording notice'],
  'rec.banner_failed': ['录像故障', 'Recording fault'],
  // The statutory reasons for a pause (pause_recording.reason, recording_status.cause)
  'reason.recess': ['休庭', 'recess'],
  'reason.non_public_evidence': ['不公开证据', 'non-public evidence'],
  'reason.mediation_unsuited_to_recording': ['不宜录音录像的调解', 'mediation unsuited to recording'],
  'reason.short.mediation_unsuited_to_recording': ['不宜录音录像', 'unsuited to recording'],
  'notice.rec_paused': ['录音录像已暂停（{reason}）。', 'The recording is paused ({reason}).'],
  'notice.rec_resumed': ['录音录像已恢复。', 'Recording has resumed.'],
  // Presiding hosts: pause / resume (control pause_recording, resume_recording)
  'ctrl.rec_pause': ['暂停录像', 'Pause recording'],
  'ctrl.rec_resume': ['恢复录像', 'Resume recording'],
  'ctrl.rec_pause_label': ['暂停录音录像（须选择法定事由）', 'Pause the recording (a statutory reason is required)'],
  'ctrl.rec_resume_label': ['恢复录音录像', 'Resume the recording'],
  'pause.title': ['暂停录音录像', 'Pause the recording'],
  'pause.why': [
    '只有法定事由才能暂停录音录像。暂停的时间、事由和操作人将记入录像清单和审计日志，所有参会人都会看到暂停提示。',
    'The recording may only be paused for a statutory reason. The time, the reason and who paused go into the recording\'s manifest and the audit log, and everyone is shown that it is paused.',
  ],
  'pause.reason': ['暂停事由', 'Reason'],
  'pause.choose': ['请选择法定事由', 'Choose a statutory reason'],
  'pause.confirm': ['确认暂停', 'Pause'],
  'pause.cancel': ['取消', 'Cancel'],
  // The end of the recording: its integrity value (recording_status final)
  'recfinal.title': ['录音录像已完成', 'Recording complete'],
  'recfinal.value_label': ['完整性校验值', 'Integrity value'],
  'recfinal.note': [
    '此校验值用于证明录音录像未被改动。请核对，并按工作人员要求签名确认。',
    'This value shows that the recording has not been altered. Check it and sign to confirm it as staff ask.',
  ],
  'recfinal.copy': ['复制校验值', 'Copy the value'],
  'recfinal.copied': ['已复制', 'Copied'],
  'banner.reconnecting': ['网络中断，正在重新连接…', 'Connection lost, reconnecting…'],

  'ctrl.mic_mute': ['静音', 'Mute'],
  'ctrl.mic_unmute': ['取消静音', 'Unmute'],
  'ctrl.cam_off': ['关闭摄像头', 'Stop video'],
  'ctrl.cam_on': ['开启摄像头', 'Start video'],
  'ctrl.leave': ['离开', 'Leave'],
  'ctrl.sound': ['点击开启声音', 'Tap to enable sound'],
  'ctrl.mic_host_muted': ['已被静音', 'Muted by host'],
  'ctrl.cam_host_off': ['画面已关闭', 'Video off by host'],
  'ctrl.hand_raise': ['举手', 'Raise hand'],
  'ctrl.hand_lower': ['放下手', 'Lower hand'],
  'ctrl.roster': ['参会人', 'People'],
  'ctrl.roster_label': ['参会人名单', 'List of participants'],

  // Presenting evidence by screen share (everyone but observers; recorded as a `screen` track)
  'ctrl.share': ['共享屏幕', 'Share screen'],
  'ctrl.share_stop': ['停止共享', 'Stop sharing'],
  'ctrl.share_label': [
    '共享屏幕：向全体参会人展示证据材料，共享内容将被录像',
    'Share your screen: show evidence to everyone; what you share is recorded',
  ],
  'ctrl.share_stop_label': ['停止共享屏幕', 'Stop sharing your screen'],
  'share.banner': [
    '您正在共享屏幕：全体参会人都能看到，共享内容将被录像。',
    'You are sharing your screen: everyone here can see it, and it is recorded.',
  ],
  'share.cancelled': ['未共享屏幕。', 'Screen not shared.'],
  'share.failed': ['无法共享屏幕，请重试。', 'Could not share the screen. Please try again.'],
  'share.stopped': ['已停止共享屏幕。', 'You stopped sharing your screen.'],

  // The record (笔录): judge, clerk, mediator, petition officer, leader (notes.js)
  'ctrl.notes': ['笔录', 'Notes'],
  'ctrl.notes_label': ['笔录：记录笔录，查看本页记录的笔录', 'Notes: write notes and see those written on this page'],
  'notes.title': ['笔录（{n}）', 'Notes ({n})'],
  'notes.close': ['关闭笔录', 'Close the notes'],
  'notes.explain': [
    '服务器为每条笔录标注录像时间码（自会话开始起计），并记入审计日志。此处列出本页记录的笔录。',
    'The server stamps each note with the recording timecode (from the start of the session) and writes it to the audit log. This list shows the notes written on this page.',
  ],
  'notes.empty': ['尚无笔录。', 'No notes yet.'],
  'notes.label': ['笔录内容', 'Note'],
  'notes.placeholder': ['输入笔录内容，按 Ctrl+Enter 记录', 'Type a note; Ctrl+Enter adds it'],
  'notes.add': ['记录', 'Add note'],
  'notes.shortcut': ['Ctrl+Enter 记录', 'Ctrl+Enter adds'],
  'notes.count': ['{n}/{max} 字', '{n}/{max} characters'],
  'notes.empty_text': ['请先输入笔录内容。', 'Please type the note first.'],
  'notes.too_long': ['每条笔录不超过 {n} 字，请分条记录。', 'A note is at most {n} characters; please split it.'],
  'notes.saving': ['正在保存…', 'Saving…'],
  'notes.saved_at': ['笔录已记录，时间码 {time}', 'Note added at {time}'],
  'notes.unconfirmed': [
    '连接中断或服务器未及时回应，未能确认是否已保存。',
    'The connection dropped or the server did not answer in time: not confirmed as saved.',
  ],
  'notes.not_saved': ['未保存：', 'Not saved: '],
  'notes.failed': ['未保存。', 'Not saved.'],
  'notes.retry': ['重试', 'Try again'],
  'notes.send_again': ['再次发送', 'Send again'],
  'notes.discard': ['从列表移除', 'Remove from the list'],
  'notes.timecode_label': ['录像时间码（自会话开始起计）', 'Recording timecode (from the start of the session)'],
  // Observers (纪委 / 检察 监督): visible to everyone, silent
  'observer.badge': ['监督旁听中', 'Supervisor observing'],
  'observer.badge_n': ['监督旁听中（{n}）', 'Supervisors observing ({n})'],
  'observer.badge_label': [
    '纪委或检察监督人员正在旁听本次会话：不发言，不开启摄像头和麦克风；其进入和离开均记入审计日志。',
    'A discipline or procuratorate supervisor is observing this session: silent, camera and microphone off; their joining and leaving are in the audit log.',
  ],
  'notice.observer_joined': ['监督人员已进入旁听：{name}', 'A supervisor is now observing: {name}'],
  'observer.self_title': ['监督旁听', 'Observing as supervisor'],
  'observer.self_note': [
    '您的摄像头和麦克风不开启；所有参会人都能看到您在场。',
    'Your camera and microphone stay off; everyone can see that you are present.',
  ],
  'prejoin.observer_heading': ['监督旁听', 'Observe as supervisor'],
  'prejoin.observer_body': [
    '您将以监督员身份旁听本次会话：不开启摄像头和麦克风，不发言。所有参会人都能看到您在场，您的进入和离开均记入审计日志。',
    'You will observe this session as a supervisor: camera and microphone off, silent. Everyone can see that you are present, and your joining and leaving are written to the audit log.',
  ],
  'prejoin.observer_join': ['进入旁听', 'Start observing'],

  'zone.main': ['主会场', 'Main room'],
  'zone.lobby': ['等候室', 'Lobby'],
  'zone.witness_waiting': ['证人候传', 'Witness waiting'],
  'zone.caucus_n': ['背对背 {n}', 'Caucus {n}'],
  'zone.consultation_n': ['律师会见 {n}', 'Consultation {n}'],
  'zone.other': ['{zone}', '{zone}'],

  'wait.lobby_title': ['请稍候，主持人将准许您进入', 'Please wait: the host will admit you'],
  'wait.lobby_body': [
    '进入前，其他参会人看不到、听不到您，您也看不到、听不到他们。请保持本页面打开。',
    'Until you are admitted nobody sees or hears you, and you do not see or hear anyone. Keep this page open.',
  ],
  'wait.reception_title': ['请稍候，工作人员将按顺序叫号接待您', 'Please wait: staff will call you in turn'],
  'wait.queue_ahead': ['您前面还有 {n} 人', '{n} people ahead of you'],
  'wait.queue_ahead_one': ['您前面还有 1 人', '1 person ahead of you'],
  'wait.queue_next': ['下一位就是您，请做好准备', 'You are next: please get ready'],
  'queue.title': ['等候接访（{n}）', 'Waiting ({n})'],
  'queue.call_next': ['叫号 · 下一位', 'Call next'],
  'queue.calling': ['正在叫号…', 'Calling…'],
  'queue.next_is': ['下一位：{name}', 'Next: {name}'],
  'queue.position': ['第 {n} 位', 'No. {n}'],
  'queue.group': ['群体：{group}', 'Group: {group}'],
  'queue.admit': ['准入', 'Admit'],
  'notice.called_next': ['已叫号：{name}', 'Called: {name}'],
  'notice.transferred_in': ['您已转至本接访窗口，请稍候。', 'You have been transferred to this reception; please wait.'],
  'transfer.title': ['您已被转至其他接访窗口', 'You are being transferred'],
  'transfer.body': ['正在为您打开新的接访窗口，请不要关闭本页面。', 'Opening the other reception for you; please keep this page open.'],
  'transfer.body_manual': ['请打开工作人员发给您的新链接继续。', 'Please open the new link staff send you to continue.'],
  'transfer.open': ['打开新的接访窗口', 'Open the other reception'],
  'wait.witness_title': ['证人候传中，请等待法官传唤', 'Witness waiting: you will be called by the judge'],
  'wait.witness_body': [
    '传唤前您看不到、听不到庭审，庭审人员也看不到、听不到您。请保持本页面打开。',
    'Until you are called you cannot see or hear the hearing, and it cannot see or hear you. Keep this page open.',
  ],
  'banner.caucus': ['背对背调解（私下会谈）', 'Private caucus'],
  'banner.consultation': ['律师会见', 'Consultation'],
  'banner.private_note': ['仅本会谈室内的人员能看到、听到您', 'Only the people in this room can see and hear you'],
  'self.muted_by_host': ['已被主持人静音', 'Muted by the host'],
  'self.video_off_by_host': ['主持人已关闭您的画面', 'Video turned off by the host'],

  'lock.lock': ['锁定', 'Lock'],
  'lock.unlock': ['解锁', 'Unlock'],
  'lock.locked': ['已锁定', 'Locked'],
  'lock.lock_label': ['锁定会议：新的参会人将不能加入', 'Lock the session: new participants cannot join'],
  'lock.unlock_label': ['解除锁定：允许新的参会人加入', 'Unlock the session: new participants may join'],
  'lock.locked_label': ['会议已锁定，新的参会人不能加入', 'The session is locked to new participants'],

  'roster.title': ['参会人（{n}）', 'People ({n})'],
  'roster.close': ['关闭名单', 'Close the list'],
  'roster.waiting': ['等候 {n} 人', '{n} waiting'],
  'roster.you': ['（我）', '(you)'],
  'roster.hand': ['举手', 'Hand raised'],
  'roster.muted_by_host': ['主持人已静音', 'Muted by host'],
  'roster.video_off_by_host': ['主持人已关画面', 'Video off by host'],
  'roster.spotlight': ['聚焦中', 'Spotlighted'],
  'roster.conn.connecting': ['连接中', 'Connecting'],
  'roster.conn.reconnecting': ['重新连接中', 'Reconnecting'],
  'roster.net.fair': ['网络一般', 'Network fair'],
  'roster.net.poor': ['网络较差', 'Network poor'],
  'roster.net.lost': ['网络中断', 'Network lost'],
  'roster.move_label': ['移至', 'Move to'],

  'act.admit': ['准许进入', 'Admit'],
  'act.deny': ['拒绝', 'Deny'],
  'act.mute_audio': ['静音', 'Mute'],
  'act.unmute_audio': ['解除静音', 'Unmute'],
  'act.mute_video': ['关闭画面', 'Stop video'],
  'act.unmute_video': ['恢复画面', 'Allow video'],
  'act.spotlight': ['聚焦', 'Spotlight'],
  'act.unspotlight': ['取消聚焦', 'End spotlight'],
  'act.remove': ['移出', 'Remove'],
  'act.remove_confirm': ['确认移出？', 'Remove now?'],
  'act.call_witness': ['传唤证人', 'Call witness'],
  'act.dismiss_witness': ['退回候传', 'Dismiss witness'],
  'act.lower_hand': ['放下手', 'Lower hand'],
  'act.timeout': ['服务器没有回应，请重试。', 'The server did not answer; please try again.'],
  'act.not_connected': ['尚未连接到服务器，请稍后再试。', 'Not connected to the server; please try again shortly.'],

  'notice.admitted': ['主持人已准许您进入会议。', 'The host has admitted you.'],
  'notice.called': ['法官已传唤您出庭作证。', 'The judge has called you to give evidence.'],
  'notice.dismissed': ['您已退回证人候传室。', 'You are back in the witness waiting room.'],
  'notice.back_main': ['您已回到主会场。', 'You are back in the main room.'],
  'notice.moved_caucus': ['您已进入背对背调解（私下会谈）。', 'You are now in a private caucus.'],
  'notice.moved_consultation': ['您已进入律师会见。', 'You are now in a consultation.'],
  'notice.moved_lobby': ['您已被移至等候室。', 'You were moved to the lobby.'],
  'notice.muted_by_host': ['主持人已将您静音。', 'The host has muted you.'],
  'notice.unmuted_by_host': ['主持人已解除对您的静音。', 'The host has unmuted you.'],
  'notice.video_off_by_host': ['主持人已关闭您的画面。', 'The host has turned off your video.'],
  'notice.video_on_by_host': ['主持人已恢复您的画面。', 'The host has allowed your video again.'],
  'notice.lobby_arrival': ['{name} 正在等候室等候进入。', '{name} is waiting in the lobby.'],

  'stage.waiting': ['等待其他参会人加入…', 'Waiting for others to join…'],
  'stage.others_private': ['其他参会人正在单独会谈，请稍候…', 'The others are talking in a private room; please wait…'],
  'tile.you': ['我', 'You'],
  'tile.reconnecting': ['重新连接中', 'Reconnecting'],
  'tile.mic_muted': ['已静音', 'Muted'],
  'tile.cam_off': ['摄像头已关闭', 'Camera off'],
  'tile.screen': ['屏幕共享', 'Screen'],
  'tile.presenting': ['{name} 正在共享屏幕', '{name} is sharing their screen'],
  'tile.presenting_unknown': ['正在共享屏幕', 'Screen share'],
  'tile.hand': ['举手', 'Hand raised'],
  'tile.muted_by_host': ['已被主持人静音', 'Muted by the host'],

  'kind.hearing': ['庭审', 'Hearing'],
  'kind.mediation': ['调解', 'Mediation'],
  'kind.reception': ['接访', 'Petition reception'],
  'case.label': ['案号', 'Case no.'],
  'case.label_reception': ['信访件编号', 'Petition no.'],

  'role.judge': ['法官', 'Judge'],
  'role.clerk': ['书记员', 'Clerk'],
  'role.mediator': ['调解员', 'Mediator'],
  'role.petition_officer': ['接访工作人员', 'Petition officer'],
  'role.leader': ['领导', 'Leader'],
  'role.party': ['当事人', 'Party'],
  'role.counsel': ['律师', 'Counsel'],
  'role.counsellor': ['心理咨询师', 'Counsellor'],
  'role.interpreter': ['翻译', 'Interpreter'],
  'role.witness': ['证人', 'Witness'],
  'role.observer': ['监督员', 'Observer'],
  'role.unknown': ['参会人', 'Participant'],

  'end.left_title': ['已离开', 'You left'],
  'end.left_body': ['您已离开会议。如需重新加入，请点击下方按钮或再次打开邀请链接。', 'You have left the session. To join again, press the button below or open your join link again.'],
  'end.closed_title': ['已断开', 'Disconnected'],
  'end.rejoin': ['重新加入', 'Join again'],
  'end.steps_title': ['尚未完成加入步骤', 'Steps not completed'],
  'end.redo_steps': ['重新完成加入步骤', 'Do the steps again'],
  'rating.heading': ['请您评价本次服务', 'Please rate this session'],
  'rating.stars_label': ['评分（1 至 5 星）', 'Rating (1 to 5 stars)'],
  'rating.star_n': ['{n} 星', '{n} of 5 stars'],
  'rating.score_1': ['非常不满意', 'Very dissatisfied'],
  'rating.score_2': ['不满意', 'Dissatisfied'],
  'rating.score_3': ['一般', 'Neutral'],
  'rating.score_4': ['满意', 'Satisfied'],
  'rating.score_5': ['非常满意', 'Very satisfied'],
  'rating.comment': ['意见或建议（选填）', 'Comments (optional)'],
  'rating.submit': ['提交', 'Submit'],
  'rating.thanks': ['谢谢！您的评价已提交。', 'Thank you! Your rating has been sent.'],
  'close.1000': ['连接已结束。', 'The connection was ended.'],
  'close.4001': ['邀请链接无效。请向工作人员索取新的邀请链接。', 'This join link is not valid. Please ask staff for a new link.'],
  'close.4002': ['邀请链接已过期。请向工作人员索取新的邀请链接。', 'This join link has expired. Please ask staff for a new link.'],
  'close.4003': ['会议不存在，请核对邀请链接。', 'The session does not exist. Please check your join link.'],
  'close.4004': ['您已被主持人移出会议。', 'You were removed from the session by the host.'],
  'close.4005': ['会议已结束。', 'The session has ended.'],
  'close.4006': ['页面与服务器通信出错。请刷新页面重试；如仍有问题，请联系工作人员。', 'The page and the server could not understand each other. Reload the page; if it happens again, contact staff.'],
  'close.4007': ['您已在其他设备或窗口加入本会议，此页面已断开。', 'You joined this session from another device or window, so this page was disconnected.'],
  'close.4012': ['会话已锁定，暂不能加入。请稍后再试，或联系工作人员。', 'The session is locked. Try again later, or contact staff.'],
  'close.4013': ['主持人未准许您进入。如有疑问，请联系工作人员。', 'The host did not admit you. If you have questions, please contact staff.'],
  'close.4014': ['需要先完成身份核验才能加入。', 'You need to pass the identity check before joining.'],
  'close.4015': [
    '需要先确认同意以在线方式参加和全程录音录像，才能加入。',
    'You need to agree to taking part online and to the recording before joining.',
  ],
  'close.4016': ['您已被转至其他接访窗口。', 'You were transferred to another reception.'],
  'close.other': ['连接已断开（代码 {code}）。', 'Disconnected (code {code}).'],

  // recordings.html: a case's recordings, for staff with the administrator's token
  'recs.page_title': ['桥 · 录音录像查阅', 'Qiao · recordings'],
  'recs.heading': ['录音录像查阅', 'Recordings'],
  'recs.why': [
    '仅限工作人员使用。每次查看录像清单、播放或下载录像都会记入审计日志。',
    'For staff only. Every view of a manifest and every playback or download is written to the audit log.',
  ],
  'recs.token': ['管理员令牌', 'Administrator token'],
  'recs.token_note': ['令牌只保存在本浏览器标签页中，关闭标签页即清除。', 'The token is kept in this browser tab only and is gone when the tab closes.'],
  'recs.token_saved': ['已使用本标签页保存的令牌。', 'Using the token saved in this tab.'],
  'recs.token_forget': ['清除令牌', 'Forget the token'],
  'recs.case': ['案号或案件 ID', 'Case number or case ID'],
  'recs.case_placeholder': ['如 (2024)冀0925民初1234号 或 case_…', 'e.g. (2024)冀0925民初1234号 or case_…'],
  'recs.lookup': ['查询', 'Look up'],
  'recs.looking': ['正在查询…', 'Looking up…'],
  'recs.refresh': ['刷新', 'Refresh'],
  'recs.need_token': ['请填写管理员令牌。', 'Please enter the administrator token.'],
  'recs.need_case': ['请填写案号或案件 ID。', 'Please enter a case number or case ID.'],
  'recs.bad_token': ['管理员令牌不正确，请重新填写。', 'The administrator token is not correct; please enter it again.'],
  'recs.no_case': ['找不到该案件：{case}', 'No such case: {case}'],
  'recs.failed': ['查询失败，请稍后重试。', 'The request failed; please try again shortly.'],
  'recs.network': ['无法连接服务器，请检查网络后重试。', 'Could not reach the server. Check the network and try again.'],
  'recs.results_title': ['录音录像（{n}）', 'Recordings ({n})'],
  'recs.results_case': ['案号 {case_id} · 案件 ID {id}', 'Case no. {case_id} · case ID {id}'],
  'recs.none': ['本案件还没有录音录像。', 'This case has no recordings yet.'],
  'recs.session': ['会话', 'Session'],
  'recs.status': ['状态', 'Status'],
  'recs.started': ['开始（北京时间）', 'Started (Beijing time)'],
  'recs.ended': ['结束（北京时间）', 'Ended (Beijing time)'],
  'recs.segments': ['片段数', 'Segments'],
  'recs.composite': ['合成录像', 'Composite'],
  'recs.chain_head': ['完整性校验值', 'Integrity value'],
  'recs.status.recording': ['录制中', 'Recording'],
  'recs.status.final': ['已完成', 'Complete'],
  'recs.status.interrupted': ['中断（已封存）', 'Interrupted (sealed)'],
  'recs.composite.none': ['未开始', 'Not started'],
  'recs.composite.rendering': ['生成中', 'Rendering'],
  'recs.composite.done': ['已生成', 'Ready'],
  'recs.composite.failed': ['生成失败', 'Failed'],
  'recs.not_yet': ['—', '—'],
  'recs.play': ['播放', 'Play'],
  'recs.play_label': ['播放合成录像', 'Play the composite recording'],
  'recs.manifest': ['查看录像清单', 'View the manifest'],
  'recs.player_title': ['合成录像', 'Composite recording'],
  'recs.player_note': ['播放链接 5 分钟内有效；过期后请重新点击“播放”。', 'The playback link works for 5 minutes; press Play again after that.'],
  'recs.player_failed': ['无法播放该录像。', 'This recording cannot be played.'],
  'recs.manifest_title': ['录像清单', 'Manifest'],
  'recs.close': ['关闭', 'Close'],
  'recs.which': ['录像 {id} · 会话 {session}', 'Recording {id} · session {session}'],

  // supervise.html: the supervisor's view of live sessions (纪委 / 检察 监督), admin token
  'sup.page_title': ['桥 · 监督旁听', 'Qiao · supervision'],
  'sup.heading': ['监督旁听', 'Supervision'],
  'sup.why': [
    '供纪委、检察监督人员使用：查看辖区内正在进行的庭审、调解和接访，并以监督员身份旁听。旁听时所有参会人都能看到您在场；每次查看和旁听都记入审计日志。',
    'For discipline and procuratorate supervisors: see the hearings, mediations and petition receptions under way in your area, and observe one. Everyone in a session you observe sees that you are there; every view and every observation is written to the audit log.',
  ],
  'sup.site': ['辖区', 'Area'],
  'sup.site_all': ['全部站点', 'All sites'],
  'sup.name': ['监督员姓名', 'Your name as observer'],
  'sup.name_note': ['旁听时显示给所有参会人。', 'Shown to everyone in a session you observe.'],
  'sup.name_placeholder': ['如：县纪委监督员 王某', 'e.g. County discipline supervisor Wang'],
  'sup.show': ['查看', 'Show'],
  'sup.loading': ['正在查询…', 'Loading…'],
  'sup.need_name': ['请填写监督员姓名：旁听时所有参会人都会看到。', 'Please enter your name: everyone sees it when you observe.'],
  'sup.results_title': ['正在进行的会话（{n}）', 'Live sessions ({n})'],
  'sup.results_where': ['辖区：{site}', 'Area: {site}'],
  'sup.refreshed': ['每 {s} 秒自动刷新 · 最近刷新 {time}', 'Refreshes every {s} s · last at {time}'],
  'sup.refresh_failed': ['自动刷新失败（{time}），将继续重试。', 'Refresh failed ({time}); retrying.'],
  'sup.refresh': ['刷新', 'Refresh'],
  'sup.none': ['当前没有正在进行的会话。', 'No session is under way.'],
  'sup.untitled': ['（无标题）', '(untitled)'],
  'sup.site_of': ['地点', 'Site'],
  'sup.no_site': ['未指定', 'Not set'],
  'sup.opened': ['开始（北京时间）', 'Started (Beijing time)'],
  'sup.elapsed': ['已进行', 'Running for'],
  'sup.minutes': ['{m} 分钟', '{m} min'],
  'sup.recording': ['录音录像', 'Recording'],
  'sup.rec.recording': ['录音录像中', 'Recording'],
  'sup.rec.final': ['已完成', 'Complete'],
  'sup.rec.interrupted': ['中断（已封存）', 'Interrupted (sealed)'],
  'sup.rec.none': ['尚无录像', 'No recording yet'],
  'sup.rec.segments': ['共 {n} 个片段', '{n} segments'],
  'sup.rec.since': ['自 {time} 起', 'since {time}'],
  'sup.people': ['在场人员（{n}）', 'Present ({n})'],
  'sup.nobody': ['暂无人员在线。', 'Nobody is connected.'],
  'sup.col_name': ['姓名', 'Name'],
  'sup.col_role': ['角色', 'Role'],
  'sup.col_zone': ['所在会场', 'Room'],
  'sup.col_conn': ['连接', 'Connection'],
  'sup.conn.connected': ['已连接', 'Connected'],
  'sup.muted_self': ['自行静音', 'self-muted'],
  'sup.muted_host': ['主持人静音', 'muted by host'],
  'sup.observe': ['旁听', 'Observe'],
  'sup.observe_label': [
    '以监督员身份旁听：在新标签页打开，所有参会人都能看到您在场',
    'Observe as supervisor: opens in a new tab; everyone sees that you are there',
  ],
  'sup.observing': ['正在生成旁听链接…', 'Creating the link…'],
  'sup.observe_opened': ['已在新标签页打开旁听页面。', 'The observer page opened in a new tab.'],
  'sup.observe_link': ['如未自动打开，请点击此处进入旁听', 'If it did not open, click here to observe'],
};

const LANGS = ['zh-CN', 'en'];
const STORAGE_KEY = 'qiao.lang';
let lang = 'zh-CN';
const listeners = [];

export function currentLang() { return lang; }

/** Translate a key; unknown keys are returned as is so a missing string is visible, not blank. */
export function t(key, params) {
  const entry = STRINGS[key];
  let text = entry ? entry[lang === 'en' ? 1 : 0] : key;
  if (params) for (const [k, v] of Object.entries(params)) text = text.replaceAll(`{${k}}`, String(v));
  return text;
}

export function roleName(role) {
  return STRINGS[`role.${role}`] ? t(`role.${role}`) : (role || t('role.unknown'));
}

/** Both languages of a key, e.g. for a message built outside the DOM: {zh, en}. */
export function pair(key, params) {
  const entry = STRINGS[key] || [key, key];
  const fill = (text) => {
    if (params) for (const [k, v] of Object.entries(params)) text = text.replaceAll(`{${k}}`, String(v));
    return text;
  };
  return { zh: fill(entry[0]), en: fill(entry[1]) };
}

/** Give an element a translated text that follows language switches. */
export function setText(el, key, params) {
  el.dataset.i18n = key;
  if (params) el.dataset.i18nParams = JSON.stringify(params); else delete el.dataset.i18nParams;
  delete el.dataset.zh; delete el.dataset.en;
  el.textContent = t(key, params);
}

/** Give an element a literal text pair (e.g. a server error with message and message_en). */
export function setLiteral(el, zh, en) {
  delete el.dataset.i18n; delete el.dataset.i18nParams;
  el.dataset.zh = zh; el.dataset.en = en || zh;
  el.textContent = lang === 'en' ? el.dataset.en : el.dataset.zh;
}

/** Give a (usually icon-only or icon+text) control a translated accessible label. */
export function setLabel(el, key) {
  el.dataset.i18nLabel = key;
  el.setAttribute('aria-label', t(key));
  el.title = t(key);
}

export function applyI18n(root = document) {
  for (const el of root.querySelectorAll('[data-i18n]')) {
    el.textContent = t(el.dataset.i18n, el.dataset.i18nParams ? JSON.parse(el.dataset.i18nParams) : undefined);
  }
  for (const el of root.querySelectorAll('[data-i18n-label]')) {
    el.setAttribute('aria-label', t(el.dataset.i18nLabel));
    el.title = t(el.dataset.i18nLabel);
  }
  for (const el of root.querySelectorAll('[data-zh]')) {
    el.textContent = lang === 'en' ? el.dataset.en : el.dataset.zh;
  }
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
  document.documentElement.lang = lang;
  // A page other than the session's names itself (<html data-title-key>), e.g. recordings.html.
  document.title = t(document.documentElement.dataset.titleKey || 'app.title');
}

export function setLang(next) {
  lang = LANGS.includes(next) ? next : 'zh-CN';
  try { localStorage.setItem(STORAGE_KEY, lang); } catch { /* storage may be disabled */ }
  applyI18n();
  for (const fn of listeners) fn(lang);
}

export function onLangChange(fn) { listeners.push(fn); }

/** zh-CN unless the user chose English earlier on this device. */
export function initI18n() {
  let saved = null;
  try { saved = localStorage.getItem(STORAGE_KEY); } catch { /* ignore */ }
  lang = LANGS.includes(saved) ? saved : 'zh-CN';
  applyI18n();
}
