//! Redis's command table as the server describes it (`COMMAND` / `COMMAND INFO`), and what it
//! says about one command line: which arguments are keys (read or written) and which are pub/sub
//! channels.
//!
//! Key extraction follows the server's own algorithm step by step (key specs first, then, for
//! the commands whose specs are incomplete or whose access depends on the arguments, the same
//! hand-written rules Redis uses: `SORT ... STORE`, `MIGRATE ... KEYS`, `SET ... GET`,
//! `EVAL`/`FCALL` numkeys, ...), so a policy decided here is the one Redis would enforce. The
//! table comes from the server, so categories and key positions stay right across versions;
//! only those hand-written rules (which Redis does not publish) are known by command name.

use std::collections::HashMap;
use std::fmt;

use thiserror::Error;

use super::{Command, Value};

/// A command's arguments, the name first: a [`Command`] from the splitter, a slice of byte
/// slices, or owned strings.
pub trait Args {
    fn argc(&self) -> usize;
    fn arg(&self, i: usize) -> Option<&[u8]>;
}

impl Args for Command<'_> {
    fn argc(&self) -> usize {
        Command::argc(self)
    }
    fn arg(&self, i: usize) -> Option<&[u8]> {
        Command::arg(self, i)
    }
}

impl<T: AsRef<[u8]>> Args for [T] {
    fn argc(&self) -> usize {
        self.len()
    }
    fn arg(&self, i: usize) -> Option<&[u8]> {
        self.get(i).map(AsRef::as_ref)
    }
}

impl<T: AsRef<[u8]>, const N: usize> Args for [T; N] {
    fn argc(&self) -> usize {
        N
    }
    fn arg(&self, i: usize) -> Option<&[u8]> {
        self.get(i).map(AsRef::as_ref)
    }
}

impl<T: AsRef<[u8]>> Args for Vec<T> {
    fn argc(&self) -> usize {
        self.len()
    }
    fn arg(&self, i: usize) -> Option<&[u8]> {
        self.get(i).map(AsRef::as_ref)
    }
}

/// Key-spec flags (Redis's `CMD_KEY_*`), as `COMMAND` lists them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KeyFlags(u32);

impl KeyFlags {
    pub const RO: KeyFlags = KeyFlags(1 << 0);
    pub const RW: KeyFlags = KeyFlags(1 << 1);
    pub const OW: KeyFlags = KeyFlags(1 << 2);
    pub const RM: KeyFlags = KeyFlags(1 << 3);
    /// The value is read (returned or used).
    pub const ACCESS: KeyFlags = KeyFlags(1 << 4);
    pub const UPDATE: KeyFlags = KeyFlags(1 << 5);
    pub const INSERT: KeyFlags = KeyFlags(1 << 6);
    pub const DELETE: KeyFlags = KeyFlags(1 << 7);
    pub const NOT_KEY: KeyFlags = KeyFlags(1 << 8);
    pub const INCOMPLETE: KeyFlags = KeyFlags(1 << 9);
    pub const VARIABLE_FLAGS: KeyFlags = KeyFlags(1 << 10);

    const NAMES: [(&'static str, KeyFlags); 11] = [
        ("RO", KeyFlags::RO),
        ("RW", KeyFlags::RW),
        ("OW", KeyFlags::OW),
        ("RM", KeyFlags::RM),
        ("access", KeyFlags::ACCESS),
        ("update", KeyFlags::UPDATE),
        ("insert", KeyFlags::INSERT),
        ("delete", KeyFlags::DELETE),
        ("not_key", KeyFlags::NOT_KEY),
        ("incomplete", KeyFlags::INCOMPLETE),
        ("variable_flags", KeyFlags::VARIABLE_FLAGS),
    ];

    pub fn empty() -> KeyFlags {
        KeyFlags(0)
    }

    /// The flag `COMMAND` names so (case-insensitive); unknown names give none.
    pub fn from_name(name: &str) -> KeyFlags {
        KeyFlags::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or(KeyFlags(0), |(_, f)| *f)
    }

    pub fn contains(self, other: KeyFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn intersects(self, other: KeyFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether Redis's ACL counts this key as read (`%R~`): the `access` flag.
    pub fn reads(self) -> bool {
        self.intersects(KeyFlags::ACCESS)
    }

    /// Whether Redis's ACL counts this key as written (`%W~`): `insert`, `update` or `delete`.
    pub fn writes(self) -> bool {
        self.intersects(KeyFlags(
            KeyFlags::INSERT.0 | KeyFlags::UPDATE.0 | KeyFlags::DELETE.0,
        ))
    }
}

impl std::ops::BitOr for KeyFlags {
    type Output = KeyFlags;
    fn bitor(self, rhs: KeyFlags) -> KeyFlags {
        KeyFlags(self.0 | rhs.0)
    }
}

impl fmt::Debug for KeyFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = KeyFlags::NAMES
            .iter()
            .filter(|(_, flag)| self.contains(*flag))
            .map(|(n, _)| *n)
            .collect();
        write!(f, "KeyFlags({})", names.join("|"))
    }
}

/// Where a key spec's search for keys starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginSearch {
    /// At this argument index.
    Index(i64),
    /// After the first argument equal to `keyword` (case-insensitive), searching from
    /// `startfrom` (negative: from the end, backwards).
    Keyword { keyword: String, startfrom: i64 },
    /// Something this parser does not know (a newer server): extraction falls back as Redis
    /// does for an invalid spec.
    Unknown,
}

/// How a key spec finds keys from where the search began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys up to `lastkey` (relative; negative counts from the end), every `keystep`
    /// arguments; `limit` > 1 takes only 1/limit of the remaining arguments.
    Range {
        lastkey: i64,
        keystep: i64,
        limit: i64,
    },
    /// The number of keys is the argument at `keynumidx`; keys start `firstkey` after the
    /// search began, every `keystep` arguments.
    Keynum {
        keynumidx: i64,
        firstkey: i64,
        keystep: i64,
    },
    Unknown,
}

/// One Redis 7 key spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub flags: KeyFlags,
    pub begin_search: BeginSearch,
    pub find_keys: FindKeys,
}

/// Redis's built-in key extraction for the commands whose key specs do not say everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GetKeys {
    /// `genericGetKeys(store, numkeys, first, step)`
    Generic {
        store: usize,
        count: usize,
        first: usize,
    },
    Sort,
    SortRo,
    Migrate,
    Georadius,
    Xread,
    Set,
    Bitfield,
}

impl GetKeys {
    fn for_command(name: &str) -> Option<GetKeys> {
        let generic = |store, count, first| {
            Some(GetKeys::Generic {
                store,
                count,
                first,
            })
        };
        match name {
            "bitfield" => Some(GetKeys::Bitfield),
            "migrate" => Some(GetKeys::Migrate),
            "sort" => Some(GetKeys::Sort),
            "sort_ro" => Some(GetKeys::SortRo),
            "georadius" | "georadiusbymember" => Some(GetKeys::Georadius),
            "xread" | "xreadgroup" => Some(GetKeys::Xread),
            "set" => Some(GetKeys::Set),
            "blmpop" | "bzmpop" | "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall"
            | "fcall_ro" => generic(0, 2, 3),
            "lmpop" | "zmpop" | "sintercard" | "zdiff" | "zinter" | "zintercard" | "zunion" => {
                generic(0, 1, 2)
            }
            "zdiffstore" | "zinterstore" | "zunionstore" => generic(1, 2, 3),
            _ => None,
        }
    }
}

/// One command (or subcommand) as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandInfo {
    /// Lowercase full name: `get`, `config|set`.
    pub name: String,
    /// Redis's arity: exactly n arguments if positive, at least -n if negative (name included).
    pub arity: i64,
    /// Lowercase command flags: `write`, `readonly`, `admin`, `noscript`, `no_auth`, ...
    pub flags: Vec<String>,
    /// Lowercase ACL categories without the `@`: `read`, `string`, `dangerous`, ...
    pub categories: Vec<String>,
    /// The legacy key positions (`first_key`, `last_key`, `step`).
    pub first_key: i64,
    pub last_key: i64,
    pub step: i64,
    pub key_specs: Vec<KeySpec>,
    /// Subcommand names (lowercase, without the parent's: `get` for `config|get`).
    pub subcommands: Vec<String>,
    /// Index in the table, for bitmaps of commands (the parent's own and each subcommand's).
    pub id: usize,
    /// The container's id for a subcommand.
    pub parent: Option<usize>,
    getkeys: Option<GetKeys>,
}

impl CommandInfo {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    pub fn in_category(&self, category: &str) -> bool {
        self.categories.iter().any(|c| c == category)
    }

    /// Whether `argc` arguments (the name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }

    /// Whether the command may name keys at all (Redis's `doesCommandHaveKeys`).
    pub fn may_have_keys(&self) -> bool {
        self.getkeys.is_some()
            || self
                .key_specs
                .iter()
                .any(|s| !s.flags.intersects(KeyFlags::NOT_KEY))
    }

    /// The pub/sub channels this command names, if it is one that does.
    pub fn channel_kind(&self) -> Option<ChannelFlags> {
        Some(match self.name.as_str() {
            "subscribe" | "ssubscribe" => ChannelFlags::SUBSCRIBE,
            "psubscribe" => ChannelFlags::SUBSCRIBE | ChannelFlags::PATTERN,
            "unsubscribe" | "sunsubscribe" => ChannelFlags::UNSUBSCRIBE,
            "punsubscribe" => ChannelFlags::UNSUBSCRIBE | ChannelFlags::PATTERN,
            "publish" | "spublish" => ChannelFlags::PUBLISH,
            _ => return None,
        })
    }
}

/// A key found in a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef {
    /// The argument index (0 is the command name).
    pub index: usize,
    pub flags: KeyFlags,
}

/// How a command uses a pub/sub channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelFlags(u8);

impl ChannelFlags {
    pub const SUBSCRIBE: ChannelFlags = ChannelFlags(1);
    pub const UNSUBSCRIBE: ChannelFlags = ChannelFlags(2);
    pub const PUBLISH: ChannelFlags = ChannelFlags(4);
    /// The argument is a glob pattern (`PSUBSCRIBE`), compared literally by the ACL.
    pub const PATTERN: ChannelFlags = ChannelFlags(8);

    pub fn contains(self, other: ChannelFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for ChannelFlags {
    type Output = ChannelFlags;
    fn bitor(self, rhs: ChannelFlags) -> ChannelFlags {
        ChannelFlags(self.0 | rhs.0)
    }
}

/// A channel found in a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelRef {
    pub index: usize,
    pub flags: ChannelFlags,
}

/// What is wrong with a `COMMAND` reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TableError {
    #[error("COMMAND reply is not an array")]
    NotAnArray,
    #[error("COMMAND entry {index} is malformed: {what}")]
    BadEntry { index: usize, what: &'static str },
}

/// The commands a server knows, by lowercase name.
#[derive(Debug, Clone, Default)]
pub struct CommandTable {
    commands: Vec<CommandInfo>,
    by_name: HashMap<String, usize>,
}

/// The result of looking a command line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'t> {
    Found(&'t CommandInfo),
    /// No such command: Redis answers `ERR unknown command`.
    UnknownCommand,
    /// The container exists but not this subcommand: `ERR unknown subcommand`.
    UnknownSubcommand(&'t CommandInfo),
}

impl CommandTable {
    /// Build the table from the reply of `COMMAND` (or `COMMAND INFO a b ...`; null entries
    /// for unknown names are skipped), RESP2 or RESP3.
    pub fn from_reply(reply: &Value) -> Result<CommandTable, TableError> {
        let entries = reply
            .without_attributes()
            .as_array()
            .ok_or(TableError::NotAnArray)?;
        let mut table = CommandTable::default();
        for (index, entry) in entries.iter().enumerate() {
            if entry.is_null() {
                continue;
            }
            table.add(entry, None, index)?;
        }
        Ok(table)
    }

    fn add(
        &mut self,
        entry: &Value,
        parent: Option<usize>,
        index: usize,
    ) -> Result<usize, TableError> {
        let bad = |what| TableError::BadEntry { index, what };
        let fields = entry.as_array().ok_or(bad("not an array"))?;
        if fields.len() < 6 {
            return Err(bad("fewer than 6 fields"));
        }
        let name = fields[0]
            .as_str()
            .ok_or(bad("name is not a string"))?
            .to_ascii_lowercase();
        let int = |i: usize, what| fields[i].as_integer().ok_or(bad(what));
        let words = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .unwrap_or_default()
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect()
        };
        let id = self.commands.len();
        let getkeys = GetKeys::for_command(&name);
        let info = CommandInfo {
            arity: int(1, "arity is not an integer")?,
            flags: words(fields.get(2)),
            first_key: int(3, "first key is not an integer")?,
            last_key: int(4, "last key is not an integer")?,
            step: int(5, "step is not an integer")?,
            categories: words(fields.get(6))
                .into_iter()
                .map(|c| c.trim_start_matches('@').to_string())
                .collect(),
            key_specs: fields
                .get(8)
                .and_then(Value::as_array)
                .unwrap_or_default()
                .iter()
                .map(key_spec)
                .collect(),
            subcommands: Vec::new(),
            id,
            parent,
            getkeys,
            name: name.clone(),
        };
        self.commands.push(info);
        self.by_name.insert(name, id);
        if let Some(subs) = fields.get(9).and_then(Value::as_array) {
            for sub in subs {
                let sub_id = self.add(sub, Some(id), index)?;
                let full = &self.commands[sub_id].name;
                let short = full.rsplit('|').next().unwrap_or(full).to_string();
                self.commands[id].subcommands.push(short);
            }
        }
        Ok(id)
    }

    /// Every command and subcommand, in id order.
    pub fn commands(&self) -> &[CommandInfo] {
        &self.commands
    }

    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// A command by full name (`get`, `CONFIG|GET`), any case.
    pub fn get(&self, name: &str) -> Option<&CommandInfo> {
        self.get_bytes(name.as_bytes())
    }

    /// [`CommandTable::get`] for bytes as they came from a client. Names up to 64 bytes are
    /// lowercased on the stack: looking up `GET` allocates nothing.
    pub fn get_bytes(&self, name: &[u8]) -> Option<&CommandInfo> {
        let mut lower = [0u8; 64];
        let id = if name.len() <= lower.len() {
            let lower = &mut lower[..name.len()];
            lower.copy_from_slice(name);
            lower.make_ascii_lowercase();
            *self.by_name.get(std::str::from_utf8(lower).ok()?)?
        } else {
            let name = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
            *self.by_name.get(&name)?
        };
        self.commands.get(id)
    }

    /// The subcommand `sub` of a container, without allocating for usual names.
    fn get_sub(&self, container: &CommandInfo, sub: &[u8]) -> Option<&CommandInfo> {
        let mut full = [0u8; 128];
        let base = container.name.as_bytes();
        let len = base.len() + 1 + sub.len();
        if len <= full.len() {
            full[..base.len()].copy_from_slice(base);
            full[base.len()] = b'|';
            full[base.len() + 1..len].copy_from_slice(sub);
            self.get_bytes(&full[..len])
        } else {
            self.get_bytes(&[base, b"|", sub].concat())
        }
    }

    pub fn by_id(&self, id: usize) -> Option<&CommandInfo> {
        self.commands.get(id)
    }

    /// The subcommands of a container.
    pub fn subcommands<'t>(
        &'t self,
        info: &'t CommandInfo,
    ) -> impl Iterator<Item = &'t CommandInfo> {
        self.commands[info.id + 1..]
            .iter()
            .take_while(move |c| c.parent == Some(info.id))
    }

    /// Every ACL category some command is in.
    pub fn categories(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self
            .commands
            .iter()
            .flat_map(|c| c.categories.iter().map(String::as_str))
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The command a line runs, as Redis's `lookupCommand` finds it: by the first argument,
    /// then, for a container (`CONFIG`, `CLIENT`, ...) given at least two arguments, by the
    /// second.
    pub fn lookup<A: Args + ?Sized>(&self, args: &A) -> Lookup<'_> {
        let Some(name) = args.arg(0) else {
            return Lookup::UnknownCommand;
        };
        // A name with '|' is not a name a client can send (`config|get` is not CONFIG GET).
        let Some(info) = self.get_bytes(name).filter(|_| !name.contains(&b'|')) else {
            return Lookup::UnknownCommand;
        };
        if info.subcommands.is_empty() || args.argc() < 2 {
            return Lookup::Found(info);
        }
        let sub = args.arg(1).filter(|s| !s.contains(&b'|'));
        match sub.and_then(|sub| self.get_sub(info, sub)) {
            Some(sub) => Lookup::Found(sub),
            None => Lookup::UnknownSubcommand(info),
        }
    }

    /// The keys of a command line (`info` from [`CommandTable::lookup`] on the same line,
    /// whose arity the caller has checked), in the order Redis checks them, appended to `out`.
    pub fn keys<A: Args + ?Sized>(&self, info: &CommandInfo, args: &A, out: &mut Vec<KeyRef>) {
        keys(info, args, out)
    }

    /// The pub/sub channels of a command line, appended to `out`.
    pub fn channels<A: Args + ?Sized>(
        &self,
        info: &CommandInfo,
        args: &A,
        out: &mut Vec<ChannelRef>,
    ) {
        if let Some(flags) = info.channel_kind() {
            let stop = if flags.contains(ChannelFlags::PUBLISH) {
                2.min(args.argc())
            } else {
                args.argc()
            };
            out.extend((1..stop).map(|index| ChannelRef { index, flags }));
        }
    }
}

fn pairs(v: &Value) -> Vec<(&str, &Value)> {
    match v.without_attributes() {
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?, v)))
            .collect(),
        Value::Array(items) => items
            .chunks_exact(2)
            .filter_map(|kv| Some((kv[0].as_str()?, &kv[1])))
            .collect(),
        _ => Vec::new(),
    }
}

fn field<'v>(pairs: &[(&str, &'v Value)], name: &str) -> Option<&'v Value> {
    pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

fn key_spec(v: &Value) -> KeySpec {
    let spec = pairs(v);
    let mut flags = KeyFlags::empty();
    for f in field(&spec, "flags")
        .and_then(Value::as_array)
        .unwrap_or_default()
    {
        if let Some(name) = f.as_str() {
            flags = flags | KeyFlags::from_name(name);
        }
    }
    let typed = |name| {
        let p = field(&spec, name).map(pairs).unwrap_or_default();
        let ty = field(&p, "type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let inner: Vec<(String, Value)> = field(&p, "spec")
            .map(pairs)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        (ty, inner)
    };
    let int = |p: &[(String, Value)], name: &str| {
        p.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_integer())
    };
    let (bs_type, bs) = typed("begin_search");
    let begin_search = match bs_type.as_str() {
        "index" => int(&bs, "index").map_or(BeginSearch::Unknown, BeginSearch::Index),
        "keyword" => match (
            bs.iter()
                .find(|(k, _)| k == "keyword")
                .and_then(|(_, v)| v.as_str()),
            int(&bs, "startfrom"),
        ) {
            (Some(keyword), Some(startfrom)) => BeginSearch::Keyword {
                keyword: keyword.to_string(),
                startfrom,
            },
            _ => BeginSearch::Unknown,
        },
        _ => BeginSearch::Unknown,
    };
    let (fk_type, fk) = typed("find_keys");
    let find_keys = match fk_type.as_str() {
        "range" => match (int(&fk, "lastkey"), int(&fk, "keystep"), int(&fk, "limit")) {
            (Some(lastkey), Some(keystep), Some(limit)) => FindKeys::Range {
                lastkey,
                keystep,
                limit,
            },
            _ => FindKeys::Unknown,
        },
        "keynum" => match (
            int(&fk, "keynumidx"),
            int(&fk, "firstkey"),
            int(&fk, "keystep"),
        ) {
            (Some(keynumidx), Some(firstkey), Some(keystep)) => FindKeys::Keynum {
                keynumidx,
                firstkey,
                keystep,
            },
            _ => FindKeys::Unknown,
        },
        _ => FindKeys::Unknown,
    };
    KeySpec {
        flags,
        begin_search,
        find_keys,
    }
}

fn eq_ignore_case(arg: Option<&[u8]>, word: &str) -> bool {
    arg.is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()))
}

/// Redis's `getKeysFromCommandWithSpecs`.
fn keys<A: Args + ?Sized>(info: &CommandInfo, args: &A, out: &mut Vec<KeyRef>) {
    let has_keyspec = info
        .key_specs
        .iter()
        .any(|s| !s.flags.intersects(KeyFlags::NOT_KEY));
    let has_varflags = info
        .key_specs
        .iter()
        .any(|s| s.flags.intersects(KeyFlags::VARIABLE_FLAGS));
    if has_keyspec && !has_varflags {
        let mark = out.len();
        if keys_from_specs(info, args, out) {
            return;
        }
        out.truncate(mark);
    }
    if let Some(getkeys) = info.getkeys {
        keys_by_rule(getkeys, args, out);
    }
}

/// Redis's `getKeysUsingKeySpecs`; false when a spec is invalid or incomplete for this line.
fn keys_from_specs<A: Args + ?Sized>(info: &CommandInfo, args: &A, out: &mut Vec<KeyRef>) -> bool {
    let argc = args.argc() as i64;
    for spec in &info.key_specs {
        if spec.flags.intersects(KeyFlags::NOT_KEY) {
            continue;
        }
        let mut first = match &spec.begin_search {
            BeginSearch::Index(i) => *i,
            BeginSearch::Keyword { keyword, startfrom } => {
                let start = if *startfrom > 0 {
                    *startfrom
                } else {
                    argc + startfrom
                };
                let end = if *startfrom > 0 { argc - 1 } else { 1 };
                let mut found = 0;
                let mut i = start;
                while i != end {
                    if i >= argc || i < 1 {
                        break;
                    }
                    if eq_ignore_case(args.arg(i as usize), keyword) {
                        found = i + 1;
                        break;
                    }
                    i = if start <= end { i + 1 } else { i - 1 };
                }
                if found == 0 {
                    continue;
                }
                found
            }
            BeginSearch::Unknown => return false,
        };
        let (last, step) = match spec.find_keys {
            FindKeys::Range {
                lastkey,
                keystep,
                limit,
            } => {
                let last = if lastkey >= 0 {
                    first + lastkey
                } else if limit == 0 {
                    argc + lastkey
                } else {
                    first + ((argc - first) / limit + lastkey)
                };
                (last, keystep)
            }
            FindKeys::Keynum {
                keynumidx,
                firstkey,
                keystep,
            } => {
                if keynumidx >= argc {
                    return false;
                }
                let numkeys = usize::try_from(first + keynumidx)
                    .ok()
                    .and_then(|i| args.arg(i))
                    .and_then(super::line::parse_i64);
                let Some(numkeys) = numkeys.filter(|n| *n >= 0) else {
                    return false;
                };
                first += firstkey;
                // Redis truncates numkeys to an int here.
                (first + i64::from(numkeys as i32) - 1, keystep)
            }
            FindKeys::Unknown => return false,
        };
        if last >= argc || last < first || first >= argc || first < 0 {
            return false;
        }
        if step <= 0 {
            return false;
        }
        let mut i = first;
        while i <= last {
            out.push(KeyRef {
                index: i as usize,
                flags: spec.flags,
            });
            i += step;
        }
        if spec.flags.intersects(KeyFlags::INCOMPLETE) {
            return false;
        }
    }
    true
}

/// C's `atoi` (what `genericGetKeys` reads numkeys with): leading space, a sign, digits.
fn atoi(arg: &[u8]) -> i64 {
    let mut rest = arg;
    while let [b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c, tail @ ..] = rest {
        rest = tail;
    }
    let negative = match rest {
        [b'-', tail @ ..] => {
            rest = tail;
            true
        }
        [b'+', tail @ ..] => {
            rest = tail;
            false
        }
        _ => false,
    };
    let mut n: i64 = 0;
    for &d in rest.iter().take_while(|d| d.is_ascii_digit()) {
        n = n.saturating_mul(10).saturating_add(i64::from(d - b'0'));
    }
    // An int in C: what does not fit is undefined there; clamp so nothing matches.
    let n = if negative { -n } else { n };
    n.clamp(i64::from(i32::MIN), i64::from(i32::MAX))
}

fn keys_by_rule<A: Args + ?Sized>(rule: GetKeys, args: &A, out: &mut Vec<KeyRef>) {
    let argc = args.argc();
    let push = |out: &mut Vec<KeyRef>, index: usize, flags: KeyFlags| {
        out.push(KeyRef { index, flags });
    };
    match rule {
        GetKeys::Generic {
            store,
            count,
            first,
        } => {
            let Some(n) = args.arg(count).map(atoi) else {
                return;
            };
            if n < 1 || n > (argc as i64 - first as i64) {
                return;
            }
            for i in 0..n as usize {
                push(out, first + i, KeyFlags::empty());
            }
            if store > 0 {
                push(out, store, KeyFlags::empty());
            }
        }
        GetKeys::SortRo => push(out, 1, KeyFlags::RO | KeyFlags::ACCESS),
        GetKeys::Sort => {
            push(out, 1, KeyFlags::RO | KeyFlags::ACCESS);
            let mut store = None;
            let mut i = 2;
            while i < argc {
                let arg = args.arg(i);
                // Redis's loop: a skip-list option skips its arguments; STORE is noticed only
                // while comparing against the first skip-list entry.
                if eq_ignore_case(arg, "limit") {
                    i += 2;
                } else if eq_ignore_case(arg, "get") || eq_ignore_case(arg, "by") {
                    i += 1;
                } else if eq_ignore_case(arg, "store") && i + 1 < argc {
                    store = Some(i + 1);
                }
                i += 1;
            }
            if let Some(s) = store {
                push(out, s, KeyFlags::OW | KeyFlags::UPDATE);
            }
        }
        GetKeys::Migrate => {
            let flags = KeyFlags::RW | KeyFlags::ACCESS | KeyFlags::DELETE;
            let (mut first, mut num) = (3, 1);
            if argc > 6 {
                let mut i = 6;
                while i < argc {
                    let arg = args.arg(i);
                    if eq_ignore_case(arg, "keys") {
                        if args.arg(3).is_some_and(|k| !k.is_empty()) {
                            num = 0;
                        } else {
                            first = i + 1;
                            num = argc - first;
                        }
                        break;
                    }
                    if eq_ignore_case(arg, "auth") {
                        i += 1;
                    } else if eq_ignore_case(arg, "auth2") {
                        i += 2;
                    }
                    i += 1;
                }
            }
            for k in 0..num {
                push(out, first + k, flags);
            }
        }
        GetKeys::Georadius => {
            let mut stored = None;
            let mut i = 5;
            while i < argc {
                let arg = args.arg(i);
                if (eq_ignore_case(arg, "store") || eq_ignore_case(arg, "storedist"))
                    && i + 1 < argc
                {
                    stored = Some(i + 1);
                    i += 1;
                }
                i += 1;
            }
            push(out, 1, KeyFlags::empty());
            if let Some(s) = stored {
                push(out, s, KeyFlags::empty());
            }
        }
        GetKeys::Xread => {
            let mut streams = None;
            let mut i = 1;
            while i < argc {
                let arg = args.arg(i);
                if eq_ignore_case(arg, "block") || eq_ignore_case(arg, "count") {
                    i += 1;
                } else if eq_ignore_case(arg, "group") {
                    i += 2;
                } else if eq_ignore_case(arg, "noack") {
                } else if eq_ignore_case(arg, "streams") {
                    streams = Some(i);
                    break;
                } else {
                    break;
                }
                i += 1;
            }
            let Some(pos) = streams else { return };
            let num = argc - pos - 1;
            if num == 0 || !num.is_multiple_of(2) {
                return;
            }
            for k in pos + 1..argc - num / 2 {
                push(out, k, KeyFlags::empty());
            }
        }
        GetKeys::Set => {
            let get = (3..argc).any(|i| eq_ignore_case(args.arg(i), "get"));
            let flags = if get {
                KeyFlags::RW | KeyFlags::ACCESS | KeyFlags::UPDATE
            } else {
                KeyFlags::OW | KeyFlags::UPDATE
            };
            push(out, 1, flags);
        }
        GetKeys::Bitfield => {
            let mut readonly = true;
            let mut i = 2;
            while i < argc {
                let remaining = argc - i - 1;
                let arg = args.arg(i);
                if eq_ignore_case(arg, "get") && remaining >= 2 {
                    i += 2;
                } else if (eq_ignore_case(arg, "set") || eq_ignore_case(arg, "incrby"))
                    && remaining >= 3
                {
                    readonly = false;
                    break;
                } else if eq_ignore_case(arg, "overflow") && remaining >= 1 {
                    i += 1;
                } else {
                    readonly = false;
                    break;
                }
                i += 1;
            }
            let flags = if readonly {
                KeyFlags::RO | KeyFlags::ACCESS
            } else {
                KeyFlags::RW | KeyFlags::ACCESS | KeyFlags::UPDATE
            };
            push(out, 1, flags);
        }
    }
}
