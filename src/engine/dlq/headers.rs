//! Where a dead-lettered record came from, read from its headers in kdeck's
//! own convention and in those of Spring Kafka, Karafka and Kafka Connect, so
//! dead-letter topics written by other tools can be redriven.

/// kdeck's dead-letter headers.
pub const SOURCE_TOPIC: &str = "kdeck.source.topic";
pub const SOURCE_PARTITION: &str = "kdeck.source.partition";
pub const SOURCE_OFFSET: &str = "kdeck.source.offset";
pub const SOURCE_TIMESTAMP: &str = "kdeck.source.timestamp";
pub const SOURCE_GROUP: &str = "kdeck.source.group";
pub const ERROR_STAGE: &str = "kdeck.error.stage";
pub const ERROR_CLASS: &str = "kdeck.error.class";
pub const ERROR_MESSAGE: &str = "kdeck.error.message";
pub const ERROR_ATTEMPTS: &str = "kdeck.error.attempts";
pub const ERROR_AT: &str = "kdeck.error.at";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub group: Option<String>,
    pub error: Option<String>,
    /// `kdeck`, `spring`, `karafka` or `connect`.
    pub convention: &'static str,
}

struct Names {
    convention: &'static str,
    topic: &'static str,
    partition: &'static str,
    offset: &'static str,
    group: &'static str,
    error: &'static str,
}

const CONVENTIONS: [Names; 5] = [
    Names { convention: "kdeck", topic: SOURCE_TOPIC, partition: SOURCE_PARTITION, offset: SOURCE_OFFSET, group: SOURCE_GROUP, error: ERROR_MESSAGE },
    Names {
        convention: "spring",
        topic: "kafka_dlt-original-topic",
        partition: "kafka_dlt-original-partition",
        offset: "kafka_dlt-original-offset",
        group: "kafka_dlt-original-consumer-group",
        error: "kafka_dlt-exception-message",
    },
    Names { convention: "karafka", topic: "source_topic", partition: "source_partition", offset: "source_offset", group: "source_consumer_group", error: "" },
    Names { convention: "karafka", topic: "original_topic", partition: "original_partition", offset: "original_offset", group: "original_consumer_group", error: "" },
    Names {
        convention: "connect",
        topic: "__connect.errors.topic",
        partition: "__connect.errors.partition",
        offset: "__connect.errors.offset",
        group: "",
        error: "__connect.errors.exception.message",
    },
];

/// Recognises the source of a dead-lettered record, or None when no known convention fits.
pub fn source_of(headers: &[(String, Option<Vec<u8>>)]) -> Option<SourceRef> {
    let get = |name: &str| -> Option<&[u8]> {
        headers.iter().rev().find(|(k, _)| k == name).and_then(|(_, v)| v.as_deref())
    };
    let text = |name: &str| get(name).map(|v| String::from_utf8_lossy(v).into_owned());
    CONVENTIONS.iter().find_map(|n| {
        let topic = text(n.topic)?;
        Some(SourceRef {
            topic,
            partition: i32::try_from(number(get(n.partition)?)?).ok()?,
            offset: number(get(n.offset)?)?,
            group: (!n.group.is_empty()).then(|| text(n.group)).flatten(),
            error: (!n.error.is_empty()).then(|| text(n.error)).flatten(),
            convention: n.convention,
        })
    })
}

/// A number as text, or big-endian binary of 4 or 8 bytes (Spring writes those).
fn number(v: &[u8]) -> Option<i64> {
    if let Some(n) = std::str::from_utf8(v).ok().and_then(|s| s.trim().parse().ok()) {
        return Some(n);
    }
    match v.len() {
        4 => Some(i32::from_be_bytes(v.try_into().ok()?) as i64),
        8 => Some(i64::from_be_bytes(v.try_into().ok()?)),
        _ => None,
    }
}

/// `is_dead_letter_header` for a key that may not be UTF-8 (then it is not one).
pub fn is_dead_letter_header_bytes(key: &[u8]) -> bool {
    std::str::from_utf8(key).is_ok_and(is_dead_letter_header)
}

/// True for headers a dead-letter writer added (dropped when a record is replayed or dead-lettered again).
pub fn is_dead_letter_header(key: &str) -> bool {
    key.starts_with("kdeck.source.")
        || key.starts_with("kdeck.error.")
        || key.starts_with("kafka_dlt-")
        || key.starts_with("__connect.errors.")
        || CONVENTIONS[2..4].iter().any(|n| [n.topic, n.partition, n.offset, n.group].contains(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &[u8])]) -> Vec<(String, Option<Vec<u8>>)> {
        pairs.iter().map(|(k, v)| (k.to_string(), Some(v.to_vec()))).collect()
    }

    #[test]
    fn reads_each_convention() {
        let spring = h(&[
            ("kafka_dlt-original-topic", b"orders"),
            ("kafka_dlt-original-partition", &3i32.to_be_bytes()),
            ("kafka_dlt-original-offset", &42i64.to_be_bytes()),
            ("kafka_dlt-exception-message", b"boom"),
        ]);
        let s = source_of(&spring).unwrap();
        assert_eq!((s.topic.as_str(), s.partition, s.offset, s.convention), ("orders", 3, 42, "spring"));
        assert_eq!(s.error.as_deref(), Some("boom"));

        let karafka = h(&[("source_topic", b"pay"), ("source_partition", b"1"), ("source_offset", b"7")]);
        assert_eq!(source_of(&karafka).unwrap().convention, "karafka");
        let connect = h(&[("__connect.errors.topic", b"t"), ("__connect.errors.partition", b"0"), ("__connect.errors.offset", b"9")]);
        assert_eq!(source_of(&connect).unwrap().offset, 9);
        let kdeck = h(&[(SOURCE_TOPIC, b"t"), (SOURCE_PARTITION, b"2"), (SOURCE_OFFSET, b"5"), (SOURCE_GROUP, b"g")]);
        assert_eq!(source_of(&kdeck).unwrap().group.as_deref(), Some("g"));
        assert_eq!(source_of(&h(&[("x", b"y")])), None);
    }
}
