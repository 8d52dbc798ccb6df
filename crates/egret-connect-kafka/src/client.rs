//! The connection to the brokers shared by the source and the sink: an rskafka client driven by a current-thread
//! tokio runtime of the task's own (the task blocks on each call, bounded by a timeout), and the back-off between
//! attempts after a broker went away.

use std::future::Future;
use std::time::Duration;

use rskafka::BackoffConfig;

pub(crate) use egret_api::retry::Backoff;
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};

/// Why a Kafka connector call failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka {brokers}: {source}")]
    Client {
        brokers: String,
        #[source]
        source: rskafka::client::error::Error,
    },
    #[error("kafka {brokers}: no answer within {timeout:?}")]
    Timeout { brokers: String, timeout: Duration },
    #[error("kafka {brokers}: topic {topic:?} does not exist")]
    MissingTopic { brokers: String, topic: String },
    #[error("kafka: cannot start the client's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("kafka source: the saved positions do not decode: {0}")]
    BadState(egret_api::StateError),
    #[error("kafka sink: the tuple has no field {0:?} (or it is neither a string nor bytes)")]
    MissingField(String),
}

/// A client for one topic: the rskafka client, its partitions' clients, and the runtime that drives them.
pub(crate) struct TopicClient {
    runtime: tokio::runtime::Runtime,
    brokers: Vec<String>,
    topic: String,
    timeout: Duration,
    client: Option<Client>,
}

impl TopicClient {
    pub(crate) fn new(brokers: Vec<String>, topic: String, timeout: Duration) -> Result<Self, KafkaError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(KafkaError::Runtime)?;
        Ok(TopicClient {
            runtime,
            brokers,
            topic,
            timeout,
            client: None,
        })
    }

    pub(crate) fn brokers(&self) -> String {
        self.brokers.join(",")
    }

    /// Runs `f` on the runtime, failing after the timeout.
    pub(crate) fn call<T>(
        &self,
        f: impl Future<Output = Result<T, rskafka::client::error::Error>>,
    ) -> Result<T, KafkaError> {
        let timeout = self.timeout;
        match self.runtime.block_on(async { tokio::time::timeout(timeout, f).await }) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(KafkaError::Client {
                brokers: self.brokers(),
                source,
            }),
            Err(_) => Err(KafkaError::Timeout {
                brokers: self.brokers(),
                timeout,
            }),
        }
    }

    /// Connects if not connected, and lists the topic's partitions (sorted).
    pub(crate) fn partitions(&mut self) -> Result<Vec<i32>, KafkaError> {
        if self.client.is_none() {
            // rskafka retries inside each call; its deadline keeps a call shorter than our timeout, so a broker that
            // is away surfaces as an error and the connector's own back-off takes over.
            let backoff = BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
                base: 2.0,
                deadline: Some(self.timeout / 2),
            };
            let builder = ClientBuilder::new(self.brokers.clone())
                .client_id("egret")
                .backoff_config(backoff);
            self.client = Some(self.call(builder.build())?);
        }
        let Some(client) = self.client.as_ref() else {
            return Ok(Vec::new());
        };
        let topics = self.call(client.list_topics())?;
        match topics.into_iter().find(|t| t.name == self.topic) {
            Some(t) => Ok(t.partitions.into_iter().collect()),
            None => Err(KafkaError::MissingTopic {
                brokers: self.brokers(),
                topic: self.topic.clone(),
            }),
        }
    }

    /// A client for one partition of the topic (connected by `partitions` first).
    pub(crate) fn partition(&self, partition: i32) -> Result<PartitionClient, KafkaError> {
        let Some(client) = self.client.as_ref() else {
            return Err(KafkaError::Timeout {
                brokers: self.brokers(),
                timeout: Duration::ZERO,
            });
        };
        self.call(client.partition_client(self.topic.clone(), partition, UnknownTopicHandling::Retry))
    }

    pub(crate) fn connected(&self) -> bool {
        self.client.is_some()
    }

    /// Forgets the connection: the next `partitions` connects again.
    pub(crate) fn disconnect(&mut self) {
        self.client = None;
    }
}

/// FNV-1a of `bytes`: a stable hash (same in every process and version), for a key's partition.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500));
        assert!(b.ready());
        assert_eq!(b.failed(), Duration::from_millis(100));
        assert!(!b.ready());
        assert_eq!(b.failed(), Duration::from_millis(200));
        assert_eq!(b.failed(), Duration::from_millis(400));
        assert_eq!(b.failed(), Duration::from_millis(500));
        assert_eq!(b.failed(), Duration::from_millis(500));
        b.reset();
        assert!(b.ready());
        assert_eq!(b.failed(), Duration::from_millis(100));
    }

    #[test]
    fn kafka_key_hash_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
