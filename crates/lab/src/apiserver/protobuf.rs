//! Just enough of the Kubernetes protobuf encoding to accept a typed client's create: the `k8s\0`
//! envelope (runtime.Unknown: TypeMeta, raw object) and the object's ObjectMeta (name,
//! generateName, namespace, labels, annotations). client-go's typed clients (so kubectl's `create
//! namespace`) send protobuf unconditionally; without the generated schemas the rest of the object
//! (spec) is not decoded, which for the objects the lab sees created this way is nothing.

use serde_json::{Map, Value, json};

fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Fields of one message: (field number, bytes) for length-delimited fields.
fn fields(b: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(b, &mut i)?;
            }
            1 => i += 8,
            5 => i += 4,
            2 => {
                let len = varint(b, &mut i)? as usize;
                let end = i.checked_add(len)?;
                out.push((field, b.get(i..end)?));
                i = end;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn string_map(entries: &[&[u8]]) -> Map<String, Value> {
    let mut m = Map::new();
    for e in entries {
        let f = fields(e).unwrap_or_default();
        let k = f
            .iter()
            .find(|(n, _)| *n == 1)
            .map(|(_, v)| text(v))
            .unwrap_or_default();
        let v = f
            .iter()
            .find(|(n, _)| *n == 2)
            .map(|(_, v)| text(v))
            .unwrap_or_default();
        m.insert(k, Value::String(v));
    }
    m
}

/// Decode a protobuf-encoded object into JSON (apiVersion, kind and metadata).
pub fn decode(body: &[u8]) -> Option<Value> {
    let payload = body.strip_prefix(b"k8s\x00")?;
    let unknown = fields(payload)?;
    let type_meta = fields(unknown.iter().find(|(n, _)| *n == 1)?.1)?;
    let api_version = type_meta
        .iter()
        .find(|(n, _)| *n == 1)
        .map(|(_, v)| text(v))
        .unwrap_or_default();
    let kind = type_meta
        .iter()
        .find(|(n, _)| *n == 2)
        .map(|(_, v)| text(v))
        .unwrap_or_default();
    let raw = unknown.iter().find(|(n, _)| *n == 2)?.1;
    let object = fields(raw)?;
    let meta_bytes = object
        .iter()
        .find(|(n, _)| *n == 1)
        .map(|(_, v)| *v)
        .unwrap_or(&[]);
    let meta = fields(meta_bytes)?;
    let mut m = Map::new();
    for (n, key) in [(1, "name"), (2, "generateName"), (3, "namespace")] {
        if let Some((_, v)) = meta.iter().find(|(f, _)| *f == n) {
            m.insert(key.into(), Value::String(text(v)));
        }
    }
    let labels: Vec<&[u8]> = meta
        .iter()
        .filter(|(f, _)| *f == 11)
        .map(|(_, v)| *v)
        .collect();
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(string_map(&labels)));
    }
    let annotations: Vec<&[u8]> = meta
        .iter()
        .filter(|(f, _)| *f == 12)
        .map(|(_, v)| *v)
        .collect();
    if !annotations.is_empty() {
        m.insert(
            "annotations".into(),
            Value::Object(string_map(&annotations)),
        );
    }
    Some(json!({"apiVersion": api_version, "kind": kind, "metadata": m}))
}
