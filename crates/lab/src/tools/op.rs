//! `op` (1Password CLI 2) stand-in: `item get`, `item create`, `read`, `inject`, against the lab vault.
//! Error lines follow op's `[ERROR] <date> <time> <message>` form on stderr with exit 1.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::common;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub title: String,
    pub category: String,
    pub fields: BTreeMap<String, String>,
    pub created_at: String,
}

/// vault name -> items (several items may share a title, as in 1Password).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Vault {
    pub vaults: BTreeMap<String, Vec<Item>>,
}

fn new_id() -> String {
    (0..26).map(|_| fastrand::lowercase()).collect()
}

impl Vault {
    /// Make `op://vault/item/field` resolvable, with a made-up value.
    pub fn ensure_reference(&mut self, r: &str) {
        let parts: Vec<&str> = r.trim_start_matches("op://").split('/').collect();
        if parts.len() < 3 {
            return;
        }
        let items = self.vaults.entry(parts[0].to_string()).or_default();
        let item = match items.iter_mut().find(|i| i.title == parts[1]) {
            Some(i) => i,
            None => {
                items.push(Item {
                    id: new_id(),
                    title: parts[1].into(),
                    category: "API_CREDENTIAL".into(),
                    fields: BTreeMap::new(),
                    created_at: jiff::Timestamp::now().to_string(),
                });
                items.last_mut().expect("pushed")
            }
        };
        item.fields.entry(parts[2].to_string()).or_insert_with(|| {
            format!(
                "lab-{}",
                (0..24)
                    .map(|_| fastrand::alphanumeric())
                    .collect::<String>()
            )
        });
    }
    pub fn find(&self, vault: &str, item: &str) -> Option<&Item> {
        self.vaults
            .get(vault)?
            .iter()
            .find(|i| i.title == item || i.id == item)
    }
}

fn error(msg: &str) -> i32 {
    let now = jiff::Timestamp::now().strftime("%Y/%m/%d %H:%M:%S");
    eprintln!("[ERROR] {now} {msg}");
    1
}

pub fn main(args: &[String]) -> i32 {
    if let Some(code) = common::fault("op", args) {
        return code;
    }
    let (dir, _) = match common::lab() {
        Ok(x) => x,
        Err(e) => return error(&e),
    };
    let vault: Vault = crate::core::read_json(&dir.vault())
        .ok()
        .flatten()
        .unwrap_or_default();
    let pos = common::positionals(
        args,
        &[
            "--vault",
            "--format",
            "--fields",
            "--title",
            "--category",
            "-i",
            "-o",
            "--in-file",
            "--out-file",
            "--account",
        ],
    );
    match pos
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["item", "get", name, ..] => {
            let v = common::flag(args, &["--vault"]).unwrap_or_else(|| "Private".into());
            match vault.find(&v, name) {
                None => error(&format!(
                    "\"{name}\" isn't an item in the \"{v}\" vault. Specify the item with its UUID, name, or domain."
                )),
                Some(item) => {
                    if common::flag(args, &["--format"]).as_deref() == Some("json") {
                        let fields: Vec<_> = item.fields.keys().map(|k| json!({"id": k, "label": k, "type": "CONCEALED", "reference": format!("op://{v}/{}/{k}", item.title)})).collect();
                        let out = json!({"id": item.id, "title": item.title, "version": 1, "vault": {"id": v, "name": v}, "category": item.category, "created_at": item.created_at, "updated_at": item.created_at, "fields": fields});
                        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                    } else {
                        println!(
                            "ID:          {}\nTitle:       {}\nVault:       {v}\nCategory:    {}",
                            item.id, item.title, item.category
                        );
                    }
                    0
                }
            }
        }
        ["item", "create", assignments @ ..] => {
            let v = common::flag(args, &["--vault"]).unwrap_or_else(|| "Private".into());
            let title = common::flag(args, &["--title"]).unwrap_or_else(|| "Untitled Item".into());
            let category =
                common::flag(args, &["--category"]).unwrap_or_else(|| "Secure Note".into());
            let mut fields = BTreeMap::new();
            for a in assignments {
                let Some((k, val)) = a.split_once('=') else {
                    return error(&format!("invalid assignment statement: {a}"));
                };
                if let Some(label) = k.strip_suffix("[file]") {
                    match std::fs::read_to_string(val) {
                        Ok(content) => {
                            fields.insert(label.replace("\\.", "."), content);
                        }
                        Err(e) => return error(&format!("could not read file {val}: {e}")),
                    }
                } else {
                    fields.insert(
                        k.split('[').next().unwrap_or(k).to_string(),
                        val.to_string(),
                    );
                }
            }
            let item = Item {
                id: new_id(),
                title: title.clone(),
                category: category.to_uppercase().replace(' ', "_"),
                fields,
                created_at: jiff::Timestamp::now().to_string(),
            };
            let id = item.id.clone();
            if let Err(e) = crate::core::update_json(&dir, &dir.vault(), |vt: &mut Vault| {
                vt.vaults.entry(v.clone()).or_default().push(item)
            }) {
                return error(&e.to_string());
            }
            println!(
                "ID:          {id}\nTitle:       {title}\nVault:       {v}\nCategory:    {category}"
            );
            0
        }
        ["read", reference] => match read(&vault, reference) {
            // `op read --out-file PATH` writes the value to a file (mode 0600) and prints the path.
            Some(value) => match common::flag(args, &["-o", "--out-file"]) {
                Some(path) => {
                    use std::os::unix::fs::OpenOptionsExt;
                    let written = std::fs::OpenOptions::new()
                        .create(true)
                        .write(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&path)
                        .and_then(|mut f| std::io::Write::write_all(&mut f, value.as_bytes()));
                    if let Err(e) = written {
                        return error(&format!("could not write {path}: {e}"));
                    }
                    println!("{path}");
                    0
                }
                None => {
                    println!("{value}");
                    0
                }
            },
            None => error(&format!(
                "could not read secret '{reference}': could not find item or field"
            )),
        },
        ["inject", ..] => {
            let Some(input) = common::flag(args, &["-i", "--in-file"]) else {
                return error("expected a template on stdin or with --in-file");
            };
            let text = match std::fs::read_to_string(&input) {
                Ok(t) => t,
                Err(e) => return error(&format!("could not read {input}: {e}")),
            };
            let re = regex::Regex::new(r"\{\{\s*(op://[^}\s]+)\s*\}\}").expect("static regex");
            let mut missing = None;
            let out = re.replace_all(&text, |c: &regex::Captures| match read(&vault, &c[1]) {
                Some(v) => v,
                None => {
                    missing = Some(c[1].to_string());
                    String::new()
                }
            });
            if let Some(m) = missing {
                return error(&format!("could not resolve secret reference '{m}'"));
            }
            match common::flag(args, &["-o", "--out-file"]) {
                Some(o) => {
                    if let Err(e) = std::fs::write(&o, out.as_bytes()) {
                        return error(&e.to_string());
                    }
                    println!("{o}");
                }
                None => print!("{out}"),
            }
            0
        }
        _ => error(&format!(
            "unknown command \"{}\" for \"op\"",
            pos.first().map(String::as_str).unwrap_or("")
        )),
    }
}

fn read(vault: &Vault, reference: &str) -> Option<String> {
    let parts: Vec<&str> = reference.strip_prefix("op://")?.split('/').collect();
    if parts.len() < 3 {
        return None;
    }
    vault
        .find(parts[0], parts[1])?
        .fields
        .get(parts[parts.len() - 1])
        .cloned()
}
