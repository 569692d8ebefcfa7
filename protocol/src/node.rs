//! The value every live node keeps in `natsfn-nodes` under its id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// natsfn's version on the node.
    pub version: String,
    /// When the node started, RFC 3339.
    pub started: String,
    /// Functions the node serves.
    pub functions: usize,
    /// Worker processes it runs now (refreshed with the key).
    pub workers: usize,
    /// Most worker processes it may run at once (`natsfn node --max-workers`).
    pub max_workers: usize,
    /// `natsfn node --label k=v`: what `placement.labels` of a binding is matched with.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The functions it serves (is subscribed for) now, by name.
    #[serde(default)]
    pub serving: Vec<String>,
    /// The NATS server it is connected to (its `server_name`).
    #[serde(default)]
    pub server: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_info_round_trips_as_json() {
        let info = NodeInfo {
            id: "host-1a2b3c4d".into(),
            host: "host".into(),
            pid: 42,
            version: "0.1.0".into(),
            started: "2026-12-02T02:40:00Z".into(),
            functions: 3,
            workers: 2,
            max_workers: 12,
            labels: BTreeMap::from([("region".into(), "eu".into())]),
            serving: vec!["hello".into()],
            server: "a".into(),
        };
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["started"], "2026-12-02T02:40:00Z");
        assert_eq!(json["max_workers"], 12);
        assert_eq!(serde_json::from_value::<NodeInfo>(json).unwrap(), info);
    }
}
