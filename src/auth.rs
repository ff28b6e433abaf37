//! Join tokens (signed JWTs bound to a session, participant and role) and the administrator's
//! bearer token.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

const ISSUER: &str = "qiao";
const AUDIENCE: &str = "qiao-join";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinClaims {
    pub iss: String,
    pub aud: String,
    /// Participant id.
    pub sub: String,
    /// Session id.
    pub sid: String,
    pub role: String,
    pub iat: u64,
    pub exp: u64,
    /// Unique token id, for audit.
    pub jti: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("token invalid")]
    Invalid,
}

/// Signs and checks join tokens with a key kept in the data dir.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Tokens {
    pub fn from_secret(secret: &[u8]) -> Tokens {
        Tokens { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret) }
    }

    /// Reads `join-token.key` from `dir`, creating a random 32-byte key on first start.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Tokens> {
        let path = dir.join("join-token.key");
        let secret = match std::fs::read(&path) {
            Ok(s) if s.len() >= 32 => s,
            _ => {
                let mut s = vec![0u8; 32];
                rand::thread_rng().fill_bytes(&mut s);
                write_private(&path, &s)?;
                s
            }
        };
        Ok(Tokens::from_secret(&secret))
    }

    pub fn issue(&self, session_id: &str, participant_id: &str, role: &str, ttl: Duration) -> (String, SystemTime) {
        let now = SystemTime::now();
        let iat = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let exp_time = now + ttl;
        let claims = JoinClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: participant_id.into(),
            sid: session_id.into(),
            role: role.into(),
            iat,
            exp: iat + ttl.as_secs(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with an in-memory key cannot fail");
        (token, exp_time)
    }

    /// The `sub` a token claims, without trusting it (for the audit trail of refused joins).
    pub fn peek_subject(&self, token: &str) -> Option<String> {
        use base64::Engine;
        let payload = token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let sub = v.get("sub")?.as_str()?;
        // Keep only what looks like one of our ids, so the log never stores attacker text.
        (sub.len() <= 64 && sub.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then(|| sub.to_string())
    }

    pub fn verify(&self, token: &str) -> Result<JoinClaims, AuthError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        v.leeway = 0;
        decode::<JoinClaims>(token, &self.decoding, &v).map(|d| d.claims).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid,
        })
    }
}

/// The administrator's bearer token: from the environment, else `admin.token` in the data dir,
/// else generated, stored and returned with `true` so the caller prints it once.
pub fn admin_token(dir: &Path, from_env: Option<String>) -> std::io::Result<(String, bool)> {
    if let Some(t) = from_env {
        return Ok((t, false));
    }
    let path = dir.join("admin.token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok((t, false));
        }
    }
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    let t: String = b.iter().map(|x| format!("{x:02x}")).collect();
    write_private(&path, t.as_bytes())?;
    Ok((t, true))
}

/// What is stored of an ID number: HMAC-SHA256 under a server key (`identity-hash.key` in the data
/// dir) over the participant id and the normalised number. Keyed, because resident ID numbers have
/// too little entropy for a plain hash: a copy of the database alone does not reveal them.
pub struct IdentityHasher {
    key: Vec<u8>,
}

impl IdentityHasher {
    pub fn from_key(key: &[u8]) -> IdentityHasher {
        IdentityHasher { key: key.to_vec() }
    }

    pub fn load_or_create(dir: &Path) -> std::io::Result<IdentityHasher> {
        let path = dir.join("identity-hash.key");
        let key = match std::fs::read(&path) {
            Ok(k) if k.len() >= 32 => k,
            _ => {
                let mut k = vec![0u8; 32];
                rand::thread_rng().fill_bytes(&mut k);
                write_private(&path, &k)?;
                k
            }
        };
        Ok(IdentityHasher { key })
    }

    /// An HMAC over `purpose` and `message` as given (no normalising), for links the server signs.
    pub fn mac(&self, purpose: &str, message: &str) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(format!("qiao-{purpose}/1\n{message}").as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn hash(&self, participant_id: &str, id_number: &str) -> String {
        use hmac::{Hmac, Mac};
        let normalised: String =
            id_number.chars().filter(|c| !c.is_whitespace()).flat_map(char::to_uppercase).collect();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(format!("qiao-identity/1:{participant_id}:{normalised}").as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Constant-time comparison, so the admin token cannot be guessed byte by byte from timings.
pub fn token_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_with_its_claims() {
        let t = Tokens::from_secret(&[7; 32]);
        let (tok, _) = t.issue("ses_1", "p_1", "judge", Duration::from_secs(60));
        let c = t.verify(&tok).unwrap();
        assert_eq!((c.sid.as_str(), c.sub.as_str(), c.role.as_str()), ("ses_1", "p_1", "judge"));
    }

    #[test]
    fn a_token_signed_by_another_server_is_invalid() {
        let (tok, _) = Tokens::from_secret(&[1; 32]).issue("s", "p", "party", Duration::from_secs(60));
        assert_eq!(Tokens::from_secret(&[2; 32]).verify(&tok), Err(AuthError::Invalid));
    }

    #[test]
    fn an_expired_token_says_so() {
        let t = Tokens::from_secret(&[3; 32]);
        let claims = JoinClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "p".into(),
            sid: "s".into(),
            role: "party".into(),
            iat: 1,
            exp: 2,
            jti: "x".into(),
        };
        let tok = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&[3; 32])).unwrap();
        assert_eq!(t.verify(&tok), Err(AuthError::Expired));
    }

    #[test]
    fn garbage_is_invalid() {
        let t = Tokens::from_secret(&[3; 32]);
        assert_eq!(t.verify("not.a.jwt"), Err(AuthError::Invalid));
        assert_eq!(t.verify(""), Err(AuthError::Invalid));
    }

    #[test]
    fn identity_hashes_are_keyed_and_normalised() {
        let a = IdentityHasher::from_key(&[1; 32]);
        let b = IdentityHasher::from_key(&[2; 32]);
        assert_eq!(a.hash("p_1", "13092519800101123x"), a.hash("p_1", " 13092519800101123X "));
        assert_ne!(
            a.hash("p_1", "13092519800101123X"),
            b.hash("p_1", "13092519800101123X"),
            "another key, another hash"
        );
        assert_ne!(a.hash("p_1", "13092519800101123X"), a.hash("p_2", "13092519800101123X"), "another invitation too");
    }

    #[test]
    fn token_comparison_requires_equal_length_and_bytes() {
        assert!(token_eq("abc", "abc"));
        assert!(!token_eq("abc", "abd"));
        assert!(!token_eq("abc", "abcd"));
    }
}
