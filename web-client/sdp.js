// Just enough SDP reading to map the subscribe connection's media sections to publishers.
//
// Each remote track is identified by the `msid` of its m-section: "a=msid:<stream id> <track id>",
// where (protocol.md) the stream id is the publisher's participant_id and the track id is the
// server's track_id. We read it from the SDP ourselves, keyed by `mid`, instead of trusting
// MediaStreamTrack.id on the receiving side: browsers are free to give remote tracks their own ids
// (Firefox does), and a transceiver may be reused for another publisher in a later offer.

/**
 * @typedef {object} MediaSection
 * @property {string} kind       "audio" | "video" | "application" …
 * @property {number} port       0 means the section is rejected/stopped
 * @property {string|null} mid
 * @property {string} direction  "sendrecv" | "sendonly" | "recvonly" | "inactive" (from the offerer's view)
 * @property {string|null} streamId
 * @property {string|null} trackId
 */

/** @param {string} sdp  @returns {MediaSection[]} */
export function parseSections(sdp) {
  const sections = [];
  let cur = null;
  for (const raw of sdp.split(/\r?\n/)) {
    const line = raw.trim();
    if (line.startsWith('m=')) {
      const [kind, port] = line.slice(2).split(' ');
      cur = { kind, port: Number(port), mid: null, direction: 'sendrecv', streamId: null, trackId: null };
      sections.push(cur);
    } else if (!cur) {
      continue; // session-level lines are not needed
    } else if (line.startsWith('a=mid:')) {
      cur.mid = line.slice(6);
    } else if (line.startsWith('a=msid:')) {
      if (cur.streamId === null) [cur.streamId, cur.trackId = null] = line.slice(7).split(/\s+/);
    } else if (/^a=(sendrecv|sendonly|recvonly|inactive)$/.test(line)) {
      cur.direction = line.slice(2);
    } else if (line.startsWith('a=ssrc:') && cur.streamId === null) {
      // Older style: "a=ssrc:<ssrc> msid:<stream id> <track id>".
      const m = /^a=ssrc:\d+ msid:(\S+)(?:\s+(\S+))?/.exec(line);
      if (m) [cur.streamId, cur.trackId] = [m[1], m[2] ?? null];
    }
  }
  return sections;
}
