//! Byte fields as hex strings in JSON (the HTTP API's convention for raw bytes).

use serde::{Deserialize, Deserializer, Serializer};

pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = <String as Deserialize<'de>>::deserialize(d)?;
    hex::decode(text.as_bytes()).map_err(serde::de::Error::custom)
}
