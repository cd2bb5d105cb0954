//! librdkafka is built with what real clusters need: TLS, SASL PLAIN and SCRAM, zstd.
//! An unsupported value is refused at client creation, so creating one proves support.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::BaseProducer;

#[test]
fn tls_with_sasl_scram_and_plain_are_accepted() {
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] {
        let made: Result<BaseConsumer, _> = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("group.id", "build-check")
            .set("security.protocol", "SASL_SSL")
            .set("sasl.mechanism", mechanism)
            .set("sasl.username", "u")
            .set("sasl.password", "p")
            .create();
        assert!(made.is_ok(), "{mechanism} over TLS: {:?}", made.err());
    }
}

#[test]
fn zstd_compression_is_accepted() {
    let made: Result<BaseProducer, _> =
        ClientConfig::new().set("bootstrap.servers", "127.0.0.1:1").set("compression.type", "zstd").create();
    assert!(made.is_ok(), "{:?}", made.err());
}

#[test]
fn an_unsupported_mechanism_is_refused_so_the_checks_above_can_fail() {
    let made: Result<BaseConsumer, _> = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:1")
        .set("group.id", "build-check")
        .set("security.protocol", "SASL_SSL")
        .set("sasl.mechanism", "NO-SUCH-MECHANISM")
        .create();
    assert!(made.is_err());
}
