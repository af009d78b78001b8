//! The slot map: which master serves each hash slot, as `CLUSTER SLOTS` tells it, merged by
//! the config epochs of `CLUSTER NODES` so that an out-of-date node's view does not take slots
//! back, and what the router and the limiter ask of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ::redis::{ErrorKind, FromRedisValue, RedisError, RedisResult, ServerErrorKind, Value};

use super::node::Node;
use super::{ClusterRouter, Router, address, host_of};
use crate::redis::keys::SLOTS;

impl ClusterRouter {
    /// A number that grows whenever a slot's owner changes in the map: a caller that stopped
    /// sending to a failed master can send again once the map has changed, since a replica may
    /// have taken its place.
    pub(crate) fn map_generation(&self) -> u64 {
        self.inner.map_generation.load(Ordering::Acquire)
    }

    /// Every slot the master of `slot` serves, by the current map (`slot` alone if none does):
    /// a failed call trips them all, so a dead master costs one timeout per interval, not one
    /// per slot its keys happen to use.
    pub(crate) fn slots_of_master(&self, slot: u16) -> Vec<u16> {
        let slots = self.inner.slots.read();
        let Some(owner) = &slots[usize::from(slot) % SLOTS] else {
            return vec![slot];
        };
        (0..SLOTS)
            .filter(|&s| {
                slots[s]
                    .as_ref()
                    .is_some_and(|node| Arc::ptr_eq(node, owner))
            })
            .map(|s| s as u16)
            .collect()
    }

    /// Every master of the current map, as its `host:port` and one slot it serves: a command
    /// sent to that slot reaches that master (for checks that concern each server, not a key).
    pub(crate) fn masters(&self) -> Vec<(String, u16)> {
        let slots = self.inner.slots.read();
        let mut seen: Vec<&Arc<Node>> = Vec::new();
        let mut masters = Vec::new();
        for (slot, node) in slots.iter().enumerate() {
            if let Some(node) = node {
                if !seen.iter().any(|s| Arc::ptr_eq(s, node)) {
                    seen.push(node);
                    masters.push((node.address.to_string(), slot as u16));
                }
            }
        }
        masters
    }
}

impl Router {
    /// The master that serves `slot`, by the current map.
    pub(super) fn owner(&self, slot: u16) -> RedisResult<Arc<Node>> {
        self.slots.read()[usize::from(slot) % SLOTS]
            .clone()
            .ok_or_else(|| {
                RedisError::from((
                    ErrorKind::Server(ServerErrorKind::ClusterDown),
                    "no master serves the slot",
                ))
            })
    }

    /// Records that `slot` has moved to `node` for good (its `MOVED` was followed and answered).
    pub(super) fn moved(&self, slot: u16, node: Arc<Node>) {
        let mut map = self.slots.write();
        map[usize::from(slot) % SLOTS] = Some(node.clone());
        self.map_generation.fetch_add(1, Ordering::Release);
        // Under the map's lock, so a refresh installing now sees it either way.
        if self.refreshing.load(Ordering::Acquire) {
            self.moved_meanwhile.lock().push((slot, node));
        }
    }

    /// Replaces the map with the `CLUSTER SLOTS` reply that the node at `asked` gave, unless it
    /// knows fewer slots than the map and another node did not say the same number
    /// (`agreed_fewer`); that refusal's detail is the number it knew.
    ///
    /// With `epochs` (node id → config epoch, from the same node's `CLUSTER NODES`), a slot
    /// whose owner's epoch is lower than the one the map holds keeps its owner: the reply's
    /// view of it is older than the map's.
    pub(super) fn install(
        &self,
        asked: &str,
        reply: Value,
        epochs: Option<&HashMap<String, u64>>,
        agreed_fewer: Option<usize>,
    ) -> RedisResult<()> {
        let asked_host = host_of(asked);
        let mut slots = vec![None; SLOTS].into_boxed_slice();
        let mut slot_epochs = vec![None; SLOTS].into_boxed_slice();
        let mut covered = 0;
        for range in array(reply)? {
            let mut fields = array(range)?.into_iter();
            let (Some(start), Some(end), Some(master)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(malformed());
            };
            let (start, end) = (integer(start)?, integer(end)?);
            let mut master = array(master)?.into_iter();
            let (Some(host), Some(port)) = (master.next(), master.next()) else {
                return Err(malformed());
            };
            // No endpoint (`cluster-preferred-endpoint-type unknown-endpoint`), an empty or an
            // unknown one means the host the reply came from.
            let host = match host {
                Value::Nil => String::new(),
                host => String::from_redis_value(host)?,
            };
            let host = if host.is_empty() || host == "?" {
                asked_host
            } else {
                &host
            };
            let node = self.node(&address(host, integer(port)? as u16))?;
            // The master's id follows its port (Redis 4 and later).
            let epoch = match master.next() {
                Some(Value::BulkString(id)) => epochs.and_then(|epochs| {
                    epochs
                        .get(std::str::from_utf8(&id).unwrap_or_default())
                        .copied()
                }),
                _ => None,
            };
            for slot in start..=end.min(SLOTS as i64 - 1) {
                slots[slot as usize] = Some(node.clone());
                slot_epochs[slot as usize] = epoch;
                covered += 1;
            }
        }
        if covered == 0 {
            return Err(RedisError::from((
                ErrorKind::Server(ServerErrorKind::ClusterDown),
                "the node serves no slot",
            )));
        }
        // A node still joining, or one with a stale view, may know fewer slots than the map
        // already does: its answer would send calls nowhere. Another node is asked instead, and
        // only when it knows the same number are the slots taken as given up (an operator
        // removed them); a slot that really lost its master answers `MOVED` or `CLUSTERDOWN` at
        // the old owner meanwhile.
        let known = self
            .slots
            .read()
            .iter()
            .filter(|node| node.is_some())
            .count();
        if covered < known && agreed_fewer != Some(covered) {
            return Err(RedisError::from((
                ErrorKind::Server(ServerErrorKind::ClusterDown),
                "the node knows fewer slots than the map",
                covered.to_string(),
            )));
        }
        let mut map = self.slots.write();
        let mut known = self.epochs.lock();
        let mut changed = false;
        let read = slots.into_vec().into_iter().zip(slot_epochs.iter());
        for (slot, (owner, epoch)) in read.enumerate() {
            match epoch {
                // An older view of the slot than the map's: keep the map's owner.
                Some(epoch) if *epoch < known[slot] && map[slot].is_some() => {}
                _ => {
                    let same = match (&map[slot], &owner) {
                        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                        (None, None) => true,
                        _ => false,
                    };
                    changed |= !same;
                    map[slot] = owner;
                    known[slot] = epoch.unwrap_or(0);
                }
            }
        }
        drop(known);
        if changed {
            self.map_generation.fetch_add(1, Ordering::Release);
        }
        // A `MOVED` followed while the map was being read may be newer than the read.
        for (slot, node) in self.moved_meanwhile.lock().drain(..) {
            map[usize::from(slot) % SLOTS] = Some(node);
        }
        let mut kept: Vec<Arc<str>> = self.seeds.clone();
        kept.extend(map.iter().flatten().map(|node| node.address.clone()));
        drop(map);
        // Nodes that left the cluster close their connections.
        self.nodes
            .lock()
            .retain(|address, _| kept.iter().any(|k| k == address));
        Ok(())
    }
}

/// Each node's config epoch by its id, from a `CLUSTER NODES` reply: lines of
/// `<id> <address> <flags> <master> <ping> <pong> <config epoch> <link> <slots>...`.
pub(super) fn config_epochs(nodes: &str) -> HashMap<String, u64> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let epoch = fields.get(6)?.parse().ok()?;
            Some((fields.first()?.to_string(), epoch))
        })
        .collect()
}

fn array(value: Value) -> RedisResult<Vec<Value>> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(malformed()),
    }
}

fn integer(value: Value) -> RedisResult<i64> {
    match value {
        Value::Int(n) if (0..=i64::from(u16::MAX)).contains(&n) => Ok(n),
        _ => Err(malformed()),
    }
}

fn malformed() -> RedisError {
    RedisError::from((ErrorKind::Parse, "unexpected CLUSTER SLOTS reply"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ::redis::{AsyncConnectionConfig, IntoConnectionInfo};

    use super::*;

    fn router() -> Router {
        Router::new(
            "redis://127.0.0.1:1".into_connection_info().unwrap(),
            Vec::new(),
            AsyncConnectionConfig::new(),
            Duration::from_millis(50),
        )
    }

    /// A `CLUSTER SLOTS` reply: `(start, end, port)` ranges on 127.0.0.1.
    fn reply(ranges: &[(i64, i64, i64)]) -> Value {
        Value::Array(
            ranges
                .iter()
                .map(|&(start, end, port)| {
                    Value::Array(vec![
                        Value::Int(start),
                        Value::Int(end),
                        Value::Array(vec![
                            Value::BulkString(b"127.0.0.1".to_vec()),
                            Value::Int(port),
                        ]),
                    ])
                })
                .collect(),
        )
    }

    fn owner_port(router: &Router, slot: usize) -> Option<String> {
        router.slots.read()[slot]
            .as_ref()
            .map(|node| node.address.to_string())
    }

    #[test]
    fn a_map_that_one_node_knows_with_fewer_slots_does_not_replace_a_fuller_one() {
        let router = router();
        let full = [(0, 5460, 7000), (5461, 10922, 7001), (10923, 16383, 7002)];
        router
            .install("127.0.0.1:7000", reply(&full), None, None)
            .unwrap();
        assert_eq!(
            owner_port(&router, 16383).as_deref(),
            Some("127.0.0.1:7002")
        );
        // A node that knows only its own slots is refused; the map stays whole.
        let partial = [(0, 5460, 7000)];
        assert!(
            router
                .install("127.0.0.1:7000", reply(&partial), None, None)
                .is_err()
        );
        assert_eq!(
            owner_port(&router, 16383).as_deref(),
            Some("127.0.0.1:7002")
        );
        // A whole map with a slot moved replaces it.
        let moved = [
            (0, 5460, 7000),
            (5461, 10922, 7001),
            (10923, 16382, 7002),
            (16383, 16383, 7000),
        ];
        router
            .install("127.0.0.1:7001", reply(&moved), None, None)
            .unwrap();
        assert_eq!(
            owner_port(&router, 16383).as_deref(),
            Some("127.0.0.1:7000")
        );
        // A reply without hosts (`unknown-endpoint`) means the host that was asked.
        let no_host = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16383),
            Value::Array(vec![Value::Nil, Value::Int(7005)]),
        ])]);
        router
            .install("127.0.0.9:7005", no_host, None, None)
            .unwrap();
        assert_eq!(owner_port(&router, 0).as_deref(), Some("127.0.0.9:7005"));
    }

    /// Slots given up on purpose (`CLUSTER DELSLOTS`) leave every node knowing fewer slots than
    /// the map: the second node that says so is believed.
    ///
    /// Regression test: a map that knew fewer slots was refused for ever.
    #[test]
    fn fewer_slots_are_believed_when_a_second_node_agrees() {
        let router = router();
        let full = [(0, 5460, 7000), (5461, 10922, 7001), (10923, 16383, 7002)];
        router
            .install("127.0.0.1:7000", reply(&full), None, None)
            .unwrap();
        let given_up = [(0, 5460, 7000), (5461, 10922, 7001), (10923, 16000, 7002)];
        let refused = router
            .install("127.0.0.1:7000", reply(&given_up), None, None)
            .unwrap_err();
        assert_eq!(refused.detail(), Some("16001"));
        // Another number does not count as agreement.
        assert!(
            router
                .install("127.0.0.1:7001", reply(&given_up), None, Some(16000))
                .is_err()
        );
        router
            .install("127.0.0.1:7001", reply(&given_up), None, Some(16001))
            .unwrap();
        assert_eq!(owner_port(&router, 16383), None);
        assert_eq!(
            owner_port(&router, 16000).as_deref(),
            Some("127.0.0.1:7002")
        );
    }

    /// A slot that moved (its `MOVED` followed) while a refresh was reading the map keeps its
    /// new owner when the refresh installs what it read before the move.
    ///
    /// Regression test: the refresh's older map overwrote the move.
    #[test]
    fn a_move_seen_during_a_refresh_outlives_the_map_it_read() {
        let router = router();
        let full = [(0, 5460, 7000), (5461, 10922, 7001), (10923, 16383, 7002)];
        router
            .install("127.0.0.1:7000", reply(&full), None, None)
            .unwrap();
        router.refreshing.store(true, Ordering::Release);
        let target = router.node("127.0.0.1:7001").unwrap();
        router.moved(42, target);
        // The refresh read the map before the move.
        router
            .install("127.0.0.1:7002", reply(&full), None, None)
            .unwrap();
        assert_eq!(owner_port(&router, 42).as_deref(), Some("127.0.0.1:7001"));
        assert_eq!(owner_port(&router, 43).as_deref(), Some("127.0.0.1:7000"));
        // Applied once: the next refresh's map stands as read.
        router
            .install("127.0.0.1:7002", reply(&full), None, None)
            .unwrap();
        assert_eq!(owner_port(&router, 42).as_deref(), Some("127.0.0.1:7000"));
    }

    /// A `CLUSTER SLOTS` reply with each master's id: `(start, end, port, id)`.
    fn reply_with_ids(ranges: &[(i64, i64, i64, &str)]) -> Value {
        Value::Array(
            ranges
                .iter()
                .map(|&(start, end, port, id)| {
                    Value::Array(vec![
                        Value::Int(start),
                        Value::Int(end),
                        Value::Array(vec![
                            Value::BulkString(b"127.0.0.1".to_vec()),
                            Value::Int(port),
                            Value::BulkString(id.as_bytes().to_vec()),
                        ]),
                    ])
                })
                .collect(),
        )
    }

    /// After a failover, the old master comes back still believing it serves its slots until
    /// the cluster tells it otherwise; a map read from it then names it, with its old config
    /// epoch, where the map already names its promoted replica with a higher one. Those slots
    /// keep the replica; the others take what the reply says.
    ///
    /// Regression test: the first full-looking reply was installed, whatever its age.
    #[test]
    fn a_map_from_an_out_of_date_node_does_not_take_slots_back() {
        let router = router();
        let nodes = "a 127.0.0.1:7000@17000 master - 0 0 1 connected 0-5460\n\
                     b 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922\n\
                     c 127.0.0.1:7002@17002 master - 0 0 3 connected 10923-16383\n\
                     d 127.0.0.1:7003@17003 slave a 0 0 1 connected\n";
        let before = [
            (0, 5460, 7000, "a"),
            (5461, 10922, 7001, "b"),
            (10923, 16383, 7002, "c"),
        ];
        let epochs = config_epochs(nodes);
        assert_eq!(epochs.get("d"), Some(&1));
        router
            .install(
                "127.0.0.1:7001",
                reply_with_ids(&before),
                Some(&epochs),
                None,
            )
            .unwrap();
        // The replica d is promoted with epoch 4, as a live node reports.
        let promoted = nodes
            .replace("master - 0 0 1 connected 0-5460", "slave d 0 0 1 connected")
            .replace("slave a 0 0 1 connected", "master - 0 0 4 connected 0-5460");
        let after = [
            (0, 5460, 7003, "d"),
            (5461, 10922, 7001, "b"),
            (10923, 16383, 7002, "c"),
        ];
        router
            .install(
                "127.0.0.1:7001",
                reply_with_ids(&after),
                Some(&config_epochs(&promoted)),
                None,
            )
            .unwrap();
        assert_eq!(owner_port(&router, 0).as_deref(), Some("127.0.0.1:7003"));
        // The old master's own view: itself at epoch 1; and slot 16383 moved to b at epoch 5.
        let stale = [
            (0, 5460, 7000, "a"),
            (5461, 10922, 7001, "b"),
            (10923, 16382, 7002, "c"),
            (16383, 16383, 7001, "b"),
        ];
        let stale_nodes = nodes.replace("master - 0 0 2", "master - 0 0 5");
        router
            .install(
                "127.0.0.1:7000",
                reply_with_ids(&stale),
                Some(&config_epochs(&stale_nodes)),
                None,
            )
            .unwrap();
        assert_eq!(owner_port(&router, 0).as_deref(), Some("127.0.0.1:7003"));
        assert_eq!(owner_port(&router, 5460).as_deref(), Some("127.0.0.1:7003"));
        assert_eq!(
            owner_port(&router, 16383).as_deref(),
            Some("127.0.0.1:7001")
        );
        // Without epochs (`CLUSTER NODES` refused), replies count by arrival, as before.
        router
            .install("127.0.0.1:7000", reply_with_ids(&before), None, None)
            .unwrap();
        assert_eq!(owner_port(&router, 0).as_deref(), Some("127.0.0.1:7000"));
    }

    #[test]
    fn each_master_is_listed_once_with_a_slot_it_serves() {
        let router = ClusterRouter {
            inner: Arc::new(router()),
        };
        assert!(router.masters().is_empty());
        let map = [
            (0, 99, 7000),
            (100, 5460, 7001),
            (5461, 10922, 7002),
            (10923, 16383, 7000),
        ];
        router
            .inner
            .install("127.0.0.1:7000", reply(&map), None, None)
            .unwrap();
        assert_eq!(
            router.masters(),
            [
                ("127.0.0.1:7000".to_owned(), 0),
                ("127.0.0.1:7001".to_owned(), 100),
                ("127.0.0.1:7002".to_owned(), 5461),
            ]
        );
    }
}
