//! An embedded Kafka cluster (librdkafka's mock cluster): real protocol on real
//! loopback ports, nothing to install. rdkafka's `MockCluster` hides the handle
//! we need to lower the group rebalance delay, so this small wrapper owns it.

use std::ffi::{CStr, CString};

use anyhow::{anyhow, Result};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};

pub struct EmbeddedCluster {
    ptr: *mut rdkafka_sys::rd_kafka_mock_cluster_t,
    /// The mock cluster lives inside this client's handle; it must outlive the cluster.
    _host: BaseProducer,
}

// SAFETY: librdkafka's mock cluster API is thread-safe (it posts ops to the cluster's thread).
unsafe impl Send for EmbeddedCluster {}
unsafe impl Sync for EmbeddedCluster {}

impl EmbeddedCluster {
    pub fn new(brokers: i32) -> Result<EmbeddedCluster> {
        let host: BaseProducer = ClientConfig::new()
            .set("log_level", "3")
            .create()
            .map_err(|e| anyhow!("cannot start the embedded cluster: {e}"))?;
        let ptr = unsafe { rdkafka_sys::rd_kafka_mock_cluster_new(host.client().native_ptr(), brokers) };
        if ptr.is_null() {
            return Err(anyhow!("cannot start the embedded cluster (librdkafka refused to create it)"));
        }
        // The default 3 s delay makes every first join of a demo wait for nothing.
        unsafe { rdkafka_sys::rd_kafka_mock_group_initial_rebalance_delay_ms(ptr, 0) };
        Ok(EmbeddedCluster { ptr, _host: host })
    }

    pub fn bootstrap_servers(&self) -> String {
        unsafe { CStr::from_ptr(rdkafka_sys::rd_kafka_mock_cluster_bootstraps(self.ptr)) }
            .to_string_lossy()
            .into_owned()
    }

    pub fn create_topic(&self, name: &str, partitions: i32, replication: i32) -> Result<()> {
        let c = CString::new(name)?;
        let err = unsafe { rdkafka_sys::rd_kafka_mock_topic_create(self.ptr, c.as_ptr(), partitions, replication) };
        if err != rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(anyhow!("cannot create topic {name} on the embedded cluster: {err:?}"));
        }
        Ok(())
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        unsafe { rdkafka_sys::rd_kafka_mock_cluster_destroy(self.ptr) };
    }
}
