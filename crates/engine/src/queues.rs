//! Fair claiming: one queue per user, served round-robin.
//!
//! The API publishes each run on `metis.runs.<engine>.<version>.<type>.<type_version>.<user>.<run_id>`
//! ([`common::nats::run_message_subject`]), so every user's queued runs are a subject filter
//! of their own. For each user with queued runs, the engine keeps a durable pull consumer
//! ([`common::nats::user_consumer_name`], shared by every instance of this engine name and
//! version, filter `….<user>.*` for each type and type version). Whenever a run slot is free,
//! [`Queues::claim`] asks the users' consumers in least-recently-served order for one message
//! each until one has one: a user with a backlog of a hundred runs gets the next slot only
//! if no other user is waiting, so another user's run waits at most for one slot to free up.
//! A user's last turn is remembered after their queue empties (up to [`REMEMBERED`] users),
//! so leaving and coming back does not jump the line; a queue whose fetch fails (a consumer
//! removed, a lost reply: each fetch is bounded by [`FETCH_TIMEOUT`]) goes to the back and
//! the other users are still served.
//!
//! **Why consumers per user.** JetStream has no priority or fair-share delivery within one
//! consumer: a single consumer delivers in stream order, which is first come, first served.
//! A work-queue stream may carry any number of consumers whose filters do not overlap, and a
//! no-wait fetch of one message per consumer is cheap, so round-robin over per-user consumers
//! is the fairness JetStream can give without a scheduler of its own. Another engine
//! instance claiming through the same consumers keeps the work-queue guarantee: each message
//! goes to one instance.
//!
//! **Which users have runs.** Two sources, so neither is load-bearing alone:
//! - a core subscription to `metis.runs.<engine>.<version>.>`: every publish names its
//!   user, at once;
//! - a resync every [`RESYNC_INTERVAL`] (and at start) from the stream's subject counts for
//!   this engine, which finds runs published while this instance was away and redeliveries
//!   (a message whose ack wait ran out). On a work-queue stream that is O(queued runs).
//!
//! A per-user consumer expires after [`INACTIVE_THRESHOLD`] without a fetch; it is
//! created again (idempotently) when its user queues a run. Messages published by an API of
//! an earlier version, without the user token (`….<type_version>.<run_id>` or
//! `….<type_version>`), go through the engine's shared consumer
//! ([`common::nats::consumer_name`]), served as one more queue in the same rotation.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::{Message, stream::Stream};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use common::nats;

/// How often the queues are re-read from the stream's subjects.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(2);
/// How long a user's consumer lives without a fetch before JetStream removes it (part of the
/// NATS layout: [`common::nats::CONSUMER_INACTIVE_THRESHOLD`]).
pub const INACTIVE_THRESHOLD: Duration = common::nats::CONSUMER_INACTIVE_THRESHOLD;
/// How long one no-wait fetch may take before it counts as failed.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How many users' last turns are remembered (beyond those with queued runs).
pub const REMEMBERED: usize = 100_000;

/// One queue: a user's token, or `None` for messages in the layout of earlier versions.
type Key = Option<String>;

fn key_of(queue: nats::RunQueue<'_>) -> Key {
    match queue {
        nats::RunQueue::User(user) => Some(user.to_owned()),
        nats::RunQueue::Shared => None,
    }
}

/// How a per-user consumer is configured (beyond its name and filter).
#[derive(Clone, Copy, Debug)]
pub struct ConsumerSettings {
    /// How long JetStream waits for a delivered message's ack.
    pub ack_wait: Duration,
    /// How often one message is delivered at most.
    pub max_deliver: i64,
}

/// The queues of one engine name and version, as one instance claims from them.
pub struct Queues {
    stream: Stream,
    engine: String,
    version: String,
    /// The subject prefixes this engine runs (`metis.runs.<e>.<v>.<type>.<type_version>`).
    prefixes: Vec<String>,
    settings: ConsumerSettings,
    /// The shared consumer's config (to create it again if it is removed).
    legacy: pull::Config,
    consumers: HashMap<Key, PullConsumer>,
    /// Queues that may hold a message.
    pending: HashSet<Key>,
    /// When each pending queue was last served (a tick of `clock`; absent = never).
    served: HashMap<Key, u64>,
    clock: u64,
    next_resync: Instant,
    /// Filled by the watcher task from the core subscription.
    discovered: Arc<Mutex<HashSet<Key>>>,
    wake: Arc<Notify>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Queues {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// What [`Queues::claim`] found.
pub enum Claim {
    /// A message, from the queue whose turn it was.
    Message(Box<Message>),
    /// Every known queue is empty.
    Empty,
}

impl Queues {
    /// Opens the queues: subscribes to new runs and keeps the shared (earlier-layout)
    /// consumer. `prefixes` are the engine's subject prefixes, one per type and type version.
    pub async fn open(
        client: &async_nats::Client,
        stream: Stream,
        engine: &str,
        version: &str,
        prefixes: Vec<String>,
        legacy: (PullConsumer, pull::Config),
        settings: ConsumerSettings,
    ) -> Result<Self, async_nats::SubscribeError> {
        let mut sub = client
            .subscribe(nats::engine_runs_filter(engine, version))
            .await?;
        let discovered: Arc<Mutex<HashSet<Key>>> = Arc::default();
        let wake = Arc::new(Notify::new());
        let watcher = {
            let discovered = discovered.clone();
            let wake = wake.clone();
            tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    let Some(queue) = nats::run_queue_of_subject(msg.subject.as_str()) else {
                        continue;
                    };
                    let key = key_of(queue);
                    discovered
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(key);
                    wake.notify_one();
                }
            })
        };
        let (legacy, legacy_config) = legacy;
        let mut consumers = HashMap::new();
        consumers.insert(None, legacy);
        Ok(Self {
            stream,
            engine: engine.to_owned(),
            version: version.to_owned(),
            prefixes,
            settings,
            legacy: legacy_config,
            consumers,
            pending: HashSet::new(),
            served: HashMap::new(),
            clock: 0,
            next_resync: Instant::now(),
            discovered,
            wake,
            watcher,
        })
    }

    /// Claims one message, from the least recently served queue that has one. A queue whose
    /// fetch fails goes to the back of the rotation (and its consumer is created again next
    /// time), and the others are still asked: `Err` only when every queue asked failed.
    pub async fn claim(&mut self) -> Result<Claim, String> {
        if Instant::now() >= self.next_resync {
            self.resync().await?;
        }
        self.take_discovered();
        let mut order: Vec<Key> = self.pending.iter().cloned().collect();
        order.sort_by_key(|k| (self.served.get(k).copied().unwrap_or(0), k.clone()));
        let mut failures = Vec::new();
        let asked = order.len();
        for key in order {
            match self.fetch_one(&key).await {
                Ok(Some(msg)) => {
                    self.serve(key);
                    return Ok(Claim::Message(Box::new(msg)));
                }
                Ok(None) => {
                    self.pending.remove(&key);
                }
                Err(e) => {
                    self.consumers.remove(&key);
                    self.serve(key);
                    failures.push(e);
                }
            }
        }
        if !failures.is_empty() && failures.len() == asked {
            return Err(failures.join("; "));
        }
        for e in failures {
            tracing::warn!(error = %e, "fetching one user's runs failed; the others were served");
        }
        Ok(Claim::Empty)
    }

    /// One message of `key`'s queue, if it has one; bounded by [`FETCH_TIMEOUT`] (a reply
    /// lost to a reconnect or a leader change must not stop claiming).
    async fn fetch_one(&mut self, key: &Key) -> Result<Option<Message>, String> {
        let consumer = self.consumer(key).await?;
        let fetch = async {
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            batch.next().await.transpose().map_err(|e| e.to_string())
        };
        match tokio::time::timeout(FETCH_TIMEOUT, fetch).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(e)) => Err(format!("fetch from {}: {e}", self.describe(key))),
            Err(_) => Err(format!(
                "fetch from {}: no answer within {FETCH_TIMEOUT:?}",
                self.describe(key)
            )),
        }
    }

    /// Moves `key` to the back of the rotation.
    fn serve(&mut self, key: Key) {
        self.clock += 1;
        self.served.insert(key, self.clock);
        if self.served.len() > REMEMBERED {
            // Forget the longest-served half of the users with nothing queued: memory stays
            // bounded, and a forgotten user was last served before everyone remembered.
            let mut idle: Vec<(u64, Key)> = self
                .served
                .iter()
                .filter(|(k, _)| !self.pending.contains(*k))
                .map(|(k, at)| (*at, k.clone()))
                .collect();
            idle.sort();
            for (_, k) in idle.into_iter().take(REMEMBERED / 2) {
                self.served.remove(&k);
            }
        }
    }

    /// Waits until a queue may have a message: a run was published, or the next resync is due.
    pub async fn changed(&self) {
        tokio::select! {
            () = self.wake.notified() => {}
            () = tokio::time::sleep_until(self.next_resync) => {}
        }
    }

    fn take_discovered(&mut self) {
        let found: Vec<Key> = self
            .discovered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .collect();
        self.pending.extend(found);
    }

    /// Marks every queue with a message in the stream as pending.
    async fn resync(&mut self) -> Result<(), String> {
        self.next_resync = Instant::now() + RESYNC_INTERVAL;
        let filter = nats::engine_runs_filter(&self.engine, &self.version);
        let subjects: Vec<(String, usize)> = self
            .stream
            .info_with_subjects(&filter)
            .await
            .map_err(|e| format!("read the queued subjects {filter}: {e}"))?
            .try_collect()
            .await
            .map_err(|e| format!("read the queued subjects {filter}: {e}"))?;
        let mut keys: HashSet<Key> = HashSet::new();
        for (subject, count) in subjects {
            if count == 0 {
                continue;
            }
            if let Some(queue) = nats::run_queue_of_subject(&subject) {
                keys.insert(key_of(queue));
            }
        }
        self.pending.extend(keys);
        // Keep consumers only for queues with queued runs (they are created again on demand).
        let pending = &self.pending;
        self.consumers.retain(|k, _| pending.contains(k));
        Ok(())
    }

    async fn consumer(&mut self, key: &Key) -> Result<PullConsumer, String> {
        if let Some(c) = self.consumers.get(key) {
            return Ok(c.clone());
        }
        let Some(user) = key else {
            let config = self.legacy.clone();
            let name = config.durable_name.clone().unwrap_or_default();
            let consumer = self
                .stream
                .create_consumer(config)
                .await
                .map_err(|e| format!("create consumer {name}: {e}"))?;
            self.consumers.insert(None, consumer.clone());
            return Ok(consumer);
        };
        let name = nats::user_consumer_name(&self.engine, &self.version, user);
        let consumer = self
            .stream
            .create_consumer(pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!(
                    "runs of user {user} for engine {} {}",
                    self.engine, self.version
                )),
                ack_policy: AckPolicy::Explicit,
                ack_wait: self.settings.ack_wait,
                max_deliver: self.settings.max_deliver,
                filter_subjects: self
                    .prefixes
                    .iter()
                    .map(|p| format!("{p}.{user}.*"))
                    .collect(),
                inactive_threshold: INACTIVE_THRESHOLD,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("create consumer {name}: {e}"))?;
        self.consumers.insert(key.clone(), consumer.clone());
        Ok(consumer)
    }

    fn describe(&self, key: &Key) -> String {
        match key {
            Some(user) => format!(
                "consumer {}",
                nats::user_consumer_name(&self.engine, &self.version, user)
            ),
            None => format!(
                "consumer {}",
                nats::consumer_name(&self.engine, &self.version)
            ),
        }
    }
}
