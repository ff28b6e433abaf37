//! Zones: every participant is in exactly one, and media flows only within a zone. Waiting zones
//! (lobby, witness waiting) carry no media at all: a witness receives nothing of the hearing
//! before being called (在线诉讼规则 Art. 26), and what a party says in a caucus reaches only the
//! caucus (在线调解规则 Art. 18).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Zone {
    /// Waiting to be admitted by a host.
    Lobby,
    /// A witness waiting to be called.
    WitnessWaiting,
    /// The session itself.
    Main,
    /// A private caucus (背对背), numbered 1–99.
    Caucus(u8),
    /// Counsel with a client, numbered 1–99.
    Consultation(u8),
}

impl Zone {
    /// Whether participants in this zone exchange media.
    pub fn carries_media(self) -> bool {
        !matches!(self, Zone::Lobby | Zone::WitnessWaiting)
    }

    pub fn parse(s: &str) -> Option<Zone> {
        let numbered = |rest: &str| rest.parse::<u8>().ok().filter(|n| (1..=99).contains(n));
        match s {
            "lobby" => Some(Zone::Lobby),
            "witness_waiting" => Some(Zone::WitnessWaiting),
            "main" => Some(Zone::Main),
            _ => {
                if let Some(n) = s.strip_prefix("caucus:") {
                    numbered(n).map(Zone::Caucus)
                } else if let Some(n) = s.strip_prefix("consultation:") {
                    numbered(n).map(Zone::Consultation)
                } else {
                    None
                }
            }
        }
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Lobby => f.write_str("lobby"),
            Zone::WitnessWaiting => f.write_str("witness_waiting"),
            Zone::Main => f.write_str("main"),
            Zone::Caucus(n) => write!(f, "caucus:{n}"),
            Zone::Consultation(n) => write!(f, "consultation:{n}"),
        }
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Zone, D::Error> {
        let s = String::deserialize(d)?;
        Zone::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown zone {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_round_trip_through_their_names() {
        for z in [Zone::Lobby, Zone::WitnessWaiting, Zone::Main, Zone::Caucus(1), Zone::Consultation(99)] {
            assert_eq!(Zone::parse(&z.to_string()), Some(z));
        }
        for bad in ["", "caucus:0", "caucus:100", "caucus:x", "hall", "consultation:"] {
            assert_eq!(Zone::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn waiting_zones_carry_no_media() {
        assert!(!Zone::Lobby.carries_media());
        assert!(!Zone::WitnessWaiting.carries_media());
        assert!(Zone::Main.carries_media() && Zone::Caucus(2).carries_media());
    }
}
