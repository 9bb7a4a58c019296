//! The node's identity: a 64-bit id derived once from the advertise address and kept forever.
//!
//! The id is FNV-1a of `host:port` (as in the Rocinante seed), so an operator can predict it,
//! but it is persisted on first start: a node that later moves to another address keeps its
//! id. Beside it lives a random incarnation, drawn when the data dir is created. A wiped data
//! dir comes back with the same id (same address) but a new incarnation, and the coordinator
//! treats it as a new node: openraft forbids a member id to come back without the log it had
//! (it could vote with an empty log and lose committed writes).

use std::path::Path;

use serde::Deserialize;
use serde::Serialize;

use crate::persist;
use crate::persist::PersistError;

/// A node id. Never 0: 0 means "unset" on the wire.
pub type NodeId = u64;

/// An order id; orders are numbered from 1 (0 names the station's group).
pub type OrderId = u64;

const IDENTITY_FILE: &str = "identity.json";
const IDENTITY_VERSION: u32 = 1;

/// Who this node is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// The node id.
    pub id: NodeId,
    /// The address the id was derived from.
    pub first_advertise: String,
    /// Drawn once per data dir; never 0.
    #[serde(default)]
    pub incarnation: u64,
}

fn new_incarnation() -> u64 {
    rand::random::<u64>().max(1)
}

/// FNV-1a (64-bit) of the address, mapped away from 0.
pub fn node_id_for(addr: &str) -> NodeId {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let h = addr.bytes().fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    if h == 0 { 1 } else { h }
}

/// Loads the persisted identity, or derives and persists it on first start.
pub fn load_or_create(data_dir: &Path, advertise: &str) -> Result<Identity, PersistError> {
    let path = data_dir.join(IDENTITY_FILE);
    if let Some(mut id) = persist::load::<Identity>(&path, IDENTITY_VERSION)? {
        if id.incarnation == 0 {
            // Written before incarnations existed: this data dir is still the one it was.
            id.incarnation = new_incarnation();
            persist::save(&path, IDENTITY_VERSION, &id)?;
        }
        return Ok(id);
    }
    let id =
        Identity { id: node_id_for(advertise), first_advertise: advertise.to_string(), incarnation: new_incarnation() };
    persist::save(&path, IDENTITY_VERSION, &id)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(node_id_for(""), 0xcbf29ce484222325);
        assert_eq!(node_id_for("a"), 0xaf63dc4c8601ec8c);
        assert_eq!(node_id_for("foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn identity_survives_an_address_change() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path(), "127.0.0.1:7400").unwrap();
        let b = load_or_create(dir.path(), "127.0.0.1:9999").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.id, node_id_for("127.0.0.1:7400"));
        assert_ne!(a.incarnation, 0);
    }

    #[test]
    fn a_wiped_data_dir_keeps_the_id_and_gets_a_new_incarnation() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path(), "127.0.0.1:7400").unwrap();
        std::fs::remove_file(dir.path().join(IDENTITY_FILE)).unwrap();
        let b = load_or_create(dir.path(), "127.0.0.1:7400").unwrap();
        assert_eq!(a.id, b.id);
        assert_ne!(a.incarnation, b.incarnation);
    }
}
