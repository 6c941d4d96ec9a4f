//! The on-disk form of an event and its JSON export form.
//!
//! Stored value: `[version: u8][hash: 32 bytes][payload]`, where payload is
//! `bincode::serialize(&Envelope)` (bincode 1.3 default options: fixed-width little-endian
//! integers) and `hash = blake3(payload)`. The payload contains the previous event's hash, so
//! the hashes form a chain: changing or removing any stored event breaks every later link.

use super::{hex, unhex, Body, Envelope, Event, Hash};
use serde::{Deserialize, Serialize};

/// The format version written today.
pub const CURRENT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("event record is too short ({0} bytes)")]
    Short(usize),
    #[error(
        "event format version {0} is newer than this torc-ledger understands; upgrade torc-ledger"
    )]
    UnknownVersion(u8),
    #[error("event payload does not decode: {0}")]
    Decode(String),
    #[error("stored hash does not match the event's content")]
    HashMismatch,
}

pub fn hash_payload(payload: &[u8]) -> Hash {
    *blake3::hash(payload).as_bytes()
}

/// Encode an envelope; returns the stored bytes and the event's hash.
pub fn encode(env: &Envelope) -> (Vec<u8>, Hash) {
    let payload = bincode::serialize(env).expect("envelopes always serialize");
    let hash = hash_payload(&payload);
    let mut out = Vec::with_capacity(33 + payload.len());
    out.push(CURRENT_VERSION);
    out.extend_from_slice(&hash);
    out.extend_from_slice(&payload);
    (out, hash)
}

/// Decode stored bytes. With `verify`, the hash is recomputed and compared.
pub fn decode(bytes: &[u8], verify: bool) -> Result<Event, CodecError> {
    if bytes.len() < 33 {
        return Err(CodecError::Short(bytes.len()));
    }
    let version = bytes[0];
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&bytes[1..33]);
    let payload = &bytes[33..];
    let env = match version {
        1 => bincode::deserialize::<Envelope>(payload)
            .map_err(|e| CodecError::Decode(e.to_string()))?,
        v => return Err(CodecError::UnknownVersion(v)),
    };
    if verify && hash_payload(payload) != hash {
        return Err(CodecError::HashMismatch);
    }
    Ok(Event { env, hash })
}

/// One line of `torc-ledger export`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportLine {
    pub seq: u64,
    pub time_ms: u64,
    pub actor: super::Actor,
    pub cause: Option<u64>,
    pub index: u32,
    pub idempotency_key: Option<String>,
    pub kind: String,
    pub body: Body,
    pub prev_hash: String,
    pub hash: String,
}

impl ExportLine {
    pub fn from_event(ev: &Event) -> ExportLine {
        ExportLine {
            seq: ev.seq,
            time_ms: ev.time_ms,
            actor: ev.actor.clone(),
            cause: ev.cause,
            index: ev.index,
            idempotency_key: ev.idempotency_key.clone(),
            kind: ev.body.kind().to_string(),
            body: ev.body.clone(),
            prev_hash: hex(&ev.prev_hash),
            hash: hex(&ev.hash),
        }
    }

    /// Rebuild the stored event; `None` when a hash field is not 64 hex digits.
    pub fn to_envelope(&self) -> Option<(Envelope, Hash)> {
        let env = Envelope {
            seq: self.seq,
            time_ms: self.time_ms,
            actor: self.actor.clone(),
            cause: self.cause,
            index: self.index,
            idempotency_key: self.idempotency_key.clone(),
            prev_hash: unhex(&self.prev_hash)?,
            body: self.body.clone(),
        };
        Some((env, unhex(&self.hash)?))
    }
}

#[cfg(test)]
mod golden {
    //! Format version 1 in bytes. If one of these fails, the on-disk format changed: do not
    //! "fix" the constant — add a new variant or a new format version with an upcaster.

    use super::*;
    use crate::event::{Actor, Classification, Envelope, Exit, Override, Why};
    use crate::model::{Action, JobStatus};

    fn env(seq: u64, body: Body) -> Envelope {
        Envelope {
            seq,
            time_ms: 1_764_806_400_000,
            actor: Actor::User {
                name: "alice".into(),
            },
            cause: Some(1),
            index: 0,
            idempotency_key: None,
            prev_hash: [7; 32],
            body,
        }
    }

    fn cases() -> Vec<(Envelope, &'static str)> {
        vec![
            (
                env(
                    2,
                    Body::StatusChanged {
                        job_id: 3,
                        from: JobStatus::Running,
                        to: JobStatus::PendingFailed,
                        attempt_id: 1,
                        prev_attempt_id: 1,
                        why: Why::NoHandler,
                    },
                ),
                GOLDEN_STATUS_CHANGED,
            ),
            (
                env(
                    5,
                    Body::JobFinished {
                        job_id: 3,
                        run_id: 1,
                        attempt_id: 1,
                        exit: Exit {
                            return_code: 137,
                            signal: Some(9),
                            duration_ms: 1500,
                            peak_memory_bytes: Some(1 << 30),
                            timed_out: false,
                        },
                    },
                ),
                GOLDEN_JOB_FINISHED,
            ),
            (
                Envelope {
                    actor: Actor::Agent {
                        name: "claude-code".into(),
                        version: "2.1".into(),
                        model: Some("opus".into()),
                        prompt_digest: Some("ab".into()),
                    },
                    idempotency_key: Some("k1".into()),
                    ..env(
                        9,
                        Body::ClassificationApplied {
                            workflow_id: 1,
                            proposal: Some(8),
                            items: vec![Classification {
                                job_id: 3,
                                action: Action::Retry,
                                reason: "OOM".into(),
                                memory_bytes: Some(8 << 30),
                                runtime_seconds: None,
                            }],
                            evidence_digest: None,
                        },
                    )
                },
                GOLDEN_CLASSIFICATION,
            ),
            (
                env(
                    10,
                    Body::OverrideSet {
                        job_id: 3,
                        from: Override::default(),
                        to: Override {
                            memory_bytes: Some(8 << 30),
                            runtime_seconds: Some(7200),
                        },
                    },
                ),
                GOLDEN_OVERRIDE,
            ),
            (env(11, Body::Undone { target: 9 }), GOLDEN_UNDONE),
            (
                env(
                    12,
                    Body::EvaluationRecorded {
                        classifier: "rules".into(),
                        classifier_version: "1".into(),
                        model: None,
                        prompt_digest: Some("ab".into()),
                        fixture_digest: "cd".into(),
                        fixture_files: vec!["dev.jsonl".into()],
                        metrics: "{\"accuracy\":1.0}".into(),
                        predictions: vec![crate::event::Prediction {
                            id: "c1".into(),
                            expected: "retry".into(),
                            predicted: Some("fail".into()),
                            reason: "KeyError".into(),
                            latency_us: 42,
                        }],
                    },
                ),
                GOLDEN_EVALUATION,
            ),
        ]
    }

    const GOLDEN_STATUS_CHANGED: &str =
        "01861f09ca83cc325d7c09f32d90a1aa626f4b29d70d3fe8a9aa98a94e73581e0302000000000000000098a8e69a010000000000000500000000000000616c69636501010000000000000000000000000707070707070707070707070707070707070707070707070707070707070707030000000300000000000000040000000a000000010000000100000006000000";
    const GOLDEN_JOB_FINISHED: &str =
        "01a86c2c6d1d0906fce1d7fdf6218dc460f992debe3411285d94eff3ea24d2992e05000000000000000098a8e69a010000000000000500000000000000616c6963650101000000000000000000000000070707070707070707070707070707070707070707070707070707070707070705000000030000000000000001000000000000000100000089000000000000000109000000dc0500000000000001000000400000000000";
    const GOLDEN_CLASSIFICATION: &str =
        "0141607399e4d11f2c1387ec8194d4a82b3a6c51872fdf03844db2e1230623c50109000000000000000098a8e69a010000010000000b00000000000000636c617564652d636f64650300000000000000322e310104000000000000006f7075730102000000000000006162010100000000000000000000000102000000000000006b310707070707070707070707070707070707070707070707070707070707070707090000000100000000000000010800000000000000010000000000000003000000000000000000000003000000000000004f4f4d0100000000020000000000";
    const GOLDEN_OVERRIDE: &str =
        "011691f65043d491225d35c1c30bf519a9207e59b762c7890f678f15e9ed87b6cc0a000000000000000098a8e69a010000000000000500000000000000616c696365010100000000000000000000000007070707070707070707070707070707070707070707070707070707070707070a0000000300000000000000000001000000000200000001201c000000000000";
    const GOLDEN_UNDONE: &str =
        "01ff6b4d5a21c3fe90b1b13a9d7ca9dd86d337786fcda7b2ef30401e3eeed536140b000000000000000098a8e69a010000000000000500000000000000616c696365010100000000000000000000000007070707070707070707070707070707070707070707070707070707070707070b0000000900000000000000";

    const GOLDEN_EVALUATION: &str =
        "018c111b42bc2dce394192bcd839e6a7dce9a940d15c30a932b0ee49b03d2329b90c000000000000000098a8e69a010000000000000500000000000000616c696365010100000000000000000000000007070707070707070707070707070707070707070707070707070707070707070f000000050000000000000072756c657301000000000000003100010200000000000000616202000000000000006364010000000000000009000000000000006465762e6a736f6e6c10000000000000007b226163637572616379223a312e307d010000000000000002000000000000006331050000000000000072657472790104000000000000006661696c08000000000000004b65794572726f722a00000000000000";

    #[test]
    fn version_1_bytes_are_stable_and_decode() {
        for (env, golden) in cases() {
            let (bytes, hash) = encode(&env);
            let hexed = crate::event::hex(&bytes);
            if std::env::var("PRINT_GOLDEN").is_ok() {
                println!("{} => {hexed}", env.body.kind());
                continue;
            }
            assert_eq!(
                hexed,
                golden,
                "format v1 bytes changed for {}",
                env.body.kind()
            );
            // Old bytes keep decoding to the same event, hash verified.
            let raw: Vec<u8> = (0..golden.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&golden[i..i + 2], 16).unwrap())
                .collect();
            let ev = decode(&raw, true).expect("golden bytes decode");
            assert_eq!(ev.env, env);
            assert_eq!(ev.hash, hash);
            assert_eq!(raw[0], 1, "format version byte");
        }
    }

    #[test]
    fn tampering_is_detected() {
        let (env, _) = cases().remove(0);
        let (mut bytes, _) = encode(&env);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            decode(&bytes, true),
            Err(CodecError::HashMismatch) | Err(CodecError::Decode(_))
        ));
        assert!(matches!(
            decode(&bytes[..10], true),
            Err(CodecError::Short(10))
        ));
        let mut newer = encode(&env).0;
        newer[0] = 9;
        assert_eq!(
            decode(&newer, true).unwrap_err(),
            CodecError::UnknownVersion(9)
        );
    }
}
