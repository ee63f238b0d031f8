//! Redis command policy in Redis's own ACL rule syntax (`ACL SETUSER`'s, without passwords),
//! so a Redis user reads `+@all -@dangerous ~app:* %R~ro:* &events:*` at a glance, and the
//! gateway refuses what Redis would refuse for a user with those rules, with the same words.
//!
//! Two steps: [`AclRules::parse`] reads the text (no server needed: config validation can run
//! it), [`RedisAcl::compile`] resolves command names and categories against the server's
//! [`CommandTable`] (from `COMMAND`), so categories and key positions are the server's own.
//! [`RedisAcl::check`] then decides a command line: lookup, arity, command bit (or first
//! argument), keys with their read/write flags, channels, across selectors, exactly in Redis
//! 7's order, so the denial names the same command, key or channel Redis would.
//!
//! Deliberately not here: passwords and the user's on/off state (Sumun authenticates and
//! disables users itself; such rules are refused so nobody believes they apply), module
//! commands, and the ACL log. Nothing here does I/O.

use std::fmt;

use sumun_wire::resp::table::{Args, ChannelFlags, CommandInfo, CommandTable, KeyRef, Lookup};
use thiserror::Error;

/// The rules of a user who has none of their own: everything but the dangerous commands
/// (`FLUSHALL`, `CONFIG`, `DEBUG`, `KEYS`, `MONITOR`, ...), on every key and channel.
pub const DEFAULT_RULES: &str = "+@all -@dangerous ~* &*";

/// The categories Redis 7 defines (a server's table may add none, but names come from here
/// too so a rule naming a category no command is in yet is still valid, as in Redis).
const CATEGORIES: [&str; 21] = [
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// Why a rule string was refused. The messages after the rule are Redis's own where Redis has
/// one (`ACL SETUSER` errors), so the same mistake reads the same.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AclError {
    #[error("redis_acl: error in rule '{rule}': {kind}")]
    Rule { rule: String, kind: RuleErrorKind },
    /// A password rule: the rule is not repeated, it may be a password.
    #[error(
        "redis_acl: password rules ('>', '<', '#', '!', nopass, resetpass) are not allowed: \
         Sumun authenticates users itself"
    )]
    Password,
    #[error("redis_acl: the rules are not valid text: {0}")]
    Quoting(String),
    #[error("redis_acl: unmatched parenthesis in acl selector starting at '{0}'")]
    UnmatchedParenthesis(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleErrorKind {
    Syntax,
    UnknownCommandOrCategory,
    PatternAfterAllKeys,
    PatternAfterAllChannels,
    FirstArgOfSubcommand,
    /// `off`: Sumun disables users itself.
    UserState,
}

impl fmt::Display for RuleErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleErrorKind::Syntax => "Syntax error",
            RuleErrorKind::UnknownCommandOrCategory => "Unknown command or category name in ACL",
            RuleErrorKind::PatternAfterAllKeys => {
                "Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and \
                 does not have any effect. Try 'resetkeys' to start with an empty list of patterns"
            }
            RuleErrorKind::PatternAfterAllChannels => {
                "Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid \
                 and does not have any effect. Try 'resetchannels' to start with an empty list of \
                 channels"
            }
            RuleErrorKind::FirstArgOfSubcommand => {
                "Allowing first-arg of a subcommand is not supported"
            }
            RuleErrorKind::UserState => {
                "users are enabled and disabled in Sumun, not in their Redis rules"
            }
        })
    }
}

/// One rule, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    AllKeys,
    ResetKeys,
    AllChannels,
    ResetChannels,
    AllCommands,
    NoCommands,
    /// `~pattern` (read and write), `%R~`, `%W~`, `%RW~`.
    Keys {
        read: bool,
        write: bool,
        pattern: Vec<u8>,
    },
    /// `&pattern`
    Channels(Vec<u8>),
    /// `+name`, `+container|sub`, `+command|first-arg` (resolved against the table).
    Allow(String),
    /// `-name`, `-container|sub`
    Deny(String),
    /// `+@category`
    AllowCategory(String),
    /// `-@category`
    DenyCategory(String),
    /// `(rules)`: another set of permissions; a command is allowed if any selector allows it.
    Selector(Vec<Rule>),
    ClearSelectors,
    /// `reset`: no commands, keys, channels or selectors.
    Reset,
    /// `on`, `sanitize-payload`, `skip-sanitize-payload`: accepted, nothing to enforce here.
    Ignored(String),
}

/// Parsed rules, not yet tied to a server's command table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRules {
    rules: Vec<Rule>,
}

fn rule_error(rule: &[u8], kind: RuleErrorKind) -> AclError {
    AclError::Rule {
        rule: String::from_utf8_lossy(rule).into_owned(),
        kind,
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn has_spaces(s: &[u8]) -> bool {
    s.iter().any(|&b| is_space(b) || b == 0)
}

impl AclRules {
    /// Read a rule string as `redis.conf` / `ACL SETUSER` would (words split with Redis's
    /// quoting, selectors in parentheses may span several words).
    pub fn parse(text: &str) -> Result<AclRules, AclError> {
        let words = sumun_wire::resp::split_words(text.as_bytes())
            .map_err(|e| AclError::Quoting(e.to_string()))?;
        // Refuse passwords before anything else can fail and name the word they are in.
        if words.iter().any(|w| is_password_rule(w)) {
            return Err(AclError::Password);
        }
        let merged = merge_selectors(words)?;
        let mut rules = Vec::with_capacity(merged.len());
        for word in merged {
            if let Some(rule) = user_rule(&word)? {
                rules.push(rule);
            }
        }
        Ok(AclRules { rules })
    }

    /// The default rules ([`DEFAULT_RULES`]).
    pub fn default_rules() -> AclRules {
        AclRules::parse(DEFAULT_RULES).expect("the default rules parse")
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// A rule that sets or removes a password, also as the first word of a selector.
pub fn is_password_rule(word: &[u8]) -> bool {
    let w = word.strip_prefix(b"(").unwrap_or(word);
    let w = w.strip_suffix(b")").unwrap_or(w);
    matches!(w.first(), Some(b'>' | b'<' | b'#' | b'!'))
        || w.eq_ignore_ascii_case(b"nopass")
        || w.eq_ignore_ascii_case(b"resetpass")
}

/// Redis's `ACLMergeSelectorArguments`: `(~a +get)` written as two words is one selector.
fn merge_selectors(words: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, AclError> {
    let mut out = Vec::with_capacity(words.len());
    let mut open: Option<Vec<u8>> = None;
    for word in words {
        if let Some(sel) = open.as_mut() {
            sel.push(b' ');
            sel.extend_from_slice(&word);
            if word.last() == Some(&b')') {
                out.extend(open.take());
            }
            continue;
        }
        if word.first() == Some(&b'(') && word.last() != Some(&b')') {
            open = Some(word);
            continue;
        }
        // A lone "(" ends with '(' not ')': handled above. "()" is an empty selector.
        out.push(word);
    }
    if let Some(sel) = open {
        let first = sel.split(|&b| b == b' ').next().unwrap_or_default();
        return Err(AclError::UnmatchedParenthesis(
            String::from_utf8_lossy(first).into_owned(),
        ));
    }
    Ok(out)
}

/// `ACLSetUser`: user-level rules, else a selector rule on the root selector. `None` for an
/// empty word (a no-op in Redis).
fn user_rule(op: &[u8]) -> Result<Option<Rule>, AclError> {
    if op.is_empty() {
        return Ok(None);
    }
    let is = |word: &str| op.eq_ignore_ascii_case(word.as_bytes());
    if is("on") || is("sanitize-payload") || is("skip-sanitize-payload") {
        return Ok(Some(Rule::Ignored(
            String::from_utf8_lossy(op).to_ascii_lowercase(),
        )));
    }
    if is("off") {
        return Err(rule_error(op, RuleErrorKind::UserState));
    }
    if is("nopass") || is("resetpass") || matches!(op[0], b'>' | b'<' | b'#' | b'!') {
        return Err(AclError::Password);
    }
    if op[0] == b'(' && op.last() == Some(&b')') {
        let inner = &op[1..op.len() - 1];
        let words = sumun_wire::resp::split_words(inner)
            .map_err(|_| rule_error(op, RuleErrorKind::Syntax))?;
        let mut rules = Vec::with_capacity(words.len());
        for word in words {
            // Inside a selector only selector rules exist: `on`, passwords... are syntax
            // errors there, as in Redis (a password still must not be echoed).
            if matches!(word.first(), Some(b'>' | b'<' | b'#' | b'!')) {
                return Err(AclError::Password);
            }
            rules.push(selector_rule(&word).map_err(|kind| rule_error(op, kind))?);
        }
        return Ok(Some(Rule::Selector(rules)));
    }
    if is("clearselectors") {
        return Ok(Some(Rule::ClearSelectors));
    }
    if is("reset") {
        return Ok(Some(Rule::Reset));
    }
    selector_rule(op)
        .map(Some)
        .map_err(|kind| rule_error(op, kind))
}

/// `ACLSetSelector`'s syntax (what needs the command table is checked in `compile`).
fn selector_rule(op: &[u8]) -> Result<Rule, RuleErrorKind> {
    let is = |word: &str| op.eq_ignore_ascii_case(word.as_bytes());
    if is("allkeys") || is("~*") {
        return Ok(Rule::AllKeys);
    }
    if is("resetkeys") {
        return Ok(Rule::ResetKeys);
    }
    if is("allchannels") || is("&*") {
        return Ok(Rule::AllChannels);
    }
    if is("resetchannels") {
        return Ok(Rule::ResetChannels);
    }
    if is("allcommands") || is("+@all") {
        return Ok(Rule::AllCommands);
    }
    if is("nocommands") || is("-@all") {
        return Ok(Rule::NoCommands);
    }
    let text = || String::from_utf8_lossy(&op[1..]).into_owned();
    match op.first() {
        Some(b'~' | b'%') => {
            let (mut read, mut write) = (op[0] == b'~', op[0] == b'~');
            let mut offset = 1;
            if op[0] == b'%' {
                while offset < op.len() {
                    match op[offset] {
                        b'R' | b'r' if !read => read = true,
                        b'W' | b'w' if !write => write = true,
                        b'~' => {
                            offset += 1;
                            break;
                        }
                        _ => return Err(RuleErrorKind::Syntax),
                    }
                    offset += 1;
                }
            }
            let pattern = &op[offset.min(op.len())..];
            if has_spaces(pattern) {
                return Err(RuleErrorKind::Syntax);
            }
            Ok(Rule::Keys {
                read,
                write,
                pattern: pattern.to_vec(),
            })
        }
        Some(b'&') => {
            if has_spaces(&op[1..]) {
                return Err(RuleErrorKind::Syntax);
            }
            Ok(Rule::Channels(op[1..].to_vec()))
        }
        Some(b'+') if op.get(1) != Some(&b'@') => Ok(Rule::Allow(text())),
        Some(b'-') if op.get(1) != Some(&b'@') => Ok(Rule::Deny(text())),
        Some(b'+') => Ok(Rule::AllowCategory(
            String::from_utf8_lossy(&op[2..]).into_owned(),
        )),
        Some(b'-') => Ok(Rule::DenyCategory(
            String::from_utf8_lossy(&op[2..]).into_owned(),
        )),
        _ => Err(RuleErrorKind::Syntax),
    }
}

/// A glob as Redis's `stringmatchlen` reads it, compiled once. Each token but `*` matches
/// exactly one byte, so matching backtracks only to the last `*` seen: O(pattern x string)
/// at worst, never exponential.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob {
    tokens: Vec<Token>,
    /// The empty pattern (matches only the empty string, as every pattern does in Redis).
    empty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Star,
    Any,
    Byte(u8),
    Class {
        negate: bool,
        bytes: Vec<u8>,
        ranges: Vec<(u8, u8)>,
    },
}

impl Glob {
    /// Tokenize exactly as `stringmatchlen` walks a pattern (its walk does not depend on the
    /// string), quirks included: an unterminated `[` class runs to the end, a range whose end
    /// is `]` (`[a-]`) consumes it, a trailing `\` is a literal backslash.
    fn new(p: &[u8]) -> Glob {
        let at = |i: usize| p.get(i).copied().unwrap_or(0);
        let mut tokens = Vec::new();
        let mut i = 0usize;
        while i < p.len() {
            match p[i] {
                b'*' => {
                    while i + 1 < p.len() && p[i + 1] == b'*' {
                        i += 1;
                    }
                    tokens.push(Token::Star);
                }
                b'?' => tokens.push(Token::Any),
                b'[' => {
                    i += 1;
                    let negate = at(i) == b'^' && i < p.len();
                    if negate {
                        i += 1;
                    }
                    let (mut bytes, mut ranges) = (Vec::new(), Vec::new());
                    loop {
                        let left = p.len().saturating_sub(i);
                        if at(i) == b'\\' && left >= 2 {
                            i += 1;
                            bytes.push(at(i));
                        } else if at(i) == b']' && left > 0 {
                            break;
                        } else if left == 0 {
                            // Unterminated: the outer step below moves past the end.
                            i = i.saturating_sub(1);
                            break;
                        } else if left >= 3 && at(i + 1) == b'-' {
                            let (a, b) = (at(i), at(i + 2));
                            ranges.push((a.min(b), a.max(b)));
                            i += 2;
                        } else {
                            bytes.push(at(i));
                        }
                        i += 1;
                    }
                    tokens.push(Token::Class {
                        negate,
                        bytes,
                        ranges,
                    });
                }
                b'\\' if i + 1 < p.len() => {
                    i += 1;
                    tokens.push(Token::Byte(p[i]));
                }
                b => tokens.push(Token::Byte(b)),
            }
            i += 1;
        }
        Glob {
            tokens,
            empty: p.is_empty(),
        }
    }

    fn token_matches(token: &Token, c: u8) -> bool {
        match token {
            Token::Star => true,
            Token::Any => true,
            Token::Byte(b) => *b == c,
            Token::Class {
                negate,
                bytes,
                ranges,
            } => {
                let hit = bytes.contains(&c) || ranges.iter().any(|(a, b)| (*a..=*b).contains(&c));
                hit != *negate
            }
        }
    }

    fn matches(&self, s: &[u8]) -> bool {
        if s.is_empty() {
            // stringmatchlen never enters its loop: only an empty pattern matches.
            return self.empty;
        }
        let t = &self.tokens;
        let (mut ti, mut si) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            match t.get(ti) {
                Some(Token::Star) => {
                    star = Some((ti, si));
                    ti += 1;
                }
                Some(tok) if Glob::token_matches(tok, s[si]) => {
                    ti += 1;
                    si += 1;
                }
                _ => match star {
                    Some((st, ss)) => {
                        ti = st + 1;
                        si = ss + 1;
                        star = Some((st, ss + 1));
                    }
                    None => return false,
                },
            }
        }
        t[ti.min(t.len())..].iter().all(|tok| *tok == Token::Star)
    }
}

/// Match `string` against a Redis glob `pattern` (`stringmatchlen`, case-sensitive).
pub fn glob_match(pattern: &[u8], string: &[u8]) -> bool {
    Glob::new(pattern).matches(string)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyPattern {
    source: Vec<u8>,
    glob: Glob,
    read: bool,
    write: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ChannelPattern {
    source: Vec<u8>,
    glob: Glob,
}

/// One set of permissions (the root one, or a `(...)` selector).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    all_commands: bool,
    /// A bit per command id of the table compiled against.
    allowed: Vec<u64>,
    /// Allowed first arguments of otherwise refused commands (`+select|0`), by command id.
    first_args: Vec<(usize, Vec<Vec<u8>>)>,
    all_keys: bool,
    keys: Vec<KeyPattern>,
    all_channels: bool,
    channels: Vec<ChannelPattern>,
}

impl Selector {
    /// A new selector: nothing allowed (Redis 7's `acl-pubsub-default` is `resetchannels`).
    fn new(commands: usize) -> Selector {
        Selector {
            all_commands: false,
            allowed: vec![0; commands.div_ceil(64)],
            first_args: Vec::new(),
            all_keys: false,
            keys: Vec::new(),
            all_channels: false,
            channels: Vec::new(),
        }
    }

    /// `ACLSelectorHasUnrestrictedKeyAccess` for reads: `allkeys`, or a `*` pattern that
    /// allows reading.
    fn reads_every_key(&self) -> bool {
        self.all_keys || self.keys.iter().any(|k| k.read && k.source == b"*")
    }

    fn bit(&self, id: usize) -> bool {
        self.allowed
            .get(id / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    fn set_bit(&mut self, id: usize, allow: bool) {
        if let Some(w) = self.allowed.get_mut(id / 64) {
            if allow {
                *w |= 1 << (id % 64);
            } else {
                *w &= !(1 << (id % 64));
            }
        }
        if !allow {
            self.all_commands = false;
        }
    }

    /// `ACLChangeSelectorPerm`: the command, and all its subcommands if it is a container.
    fn change(&mut self, table: &CommandTable, info: &CommandInfo, allow: bool) {
        self.set_bit(info.id, allow);
        self.first_args.retain(|(id, _)| *id != info.id);
        for sub in table.subcommands(info) {
            self.set_bit(sub.id, allow);
        }
    }

    fn apply(&mut self, table: &CommandTable, rule: &Rule) -> Result<(), RuleErrorKind> {
        match rule {
            Rule::AllKeys => {
                self.all_keys = true;
                self.keys.clear();
            }
            Rule::ResetKeys => {
                self.all_keys = false;
                self.keys.clear();
            }
            Rule::AllChannels => {
                self.all_channels = true;
                self.channels.clear();
            }
            Rule::ResetChannels => {
                self.all_channels = false;
                self.channels.clear();
            }
            Rule::AllCommands => {
                self.allowed.iter_mut().for_each(|w| *w = u64::MAX);
                self.all_commands = true;
                self.first_args.clear();
            }
            Rule::NoCommands => {
                self.allowed.iter_mut().for_each(|w| *w = 0);
                self.all_commands = false;
                self.first_args.clear();
            }
            Rule::Keys {
                read,
                write,
                pattern,
            } => {
                if self.all_keys {
                    return Err(RuleErrorKind::PatternAfterAllKeys);
                }
                match self.keys.iter_mut().find(|k| k.source == *pattern) {
                    Some(existing) => {
                        existing.read |= *read;
                        existing.write |= *write;
                    }
                    None => self.keys.push(KeyPattern {
                        source: pattern.clone(),
                        glob: Glob::new(pattern),
                        read: *read,
                        write: *write,
                    }),
                }
            }
            Rule::Channels(pattern) => {
                if self.all_channels {
                    return Err(RuleErrorKind::PatternAfterAllChannels);
                }
                if !self.channels.iter().any(|c| c.source == *pattern) {
                    self.channels.push(ChannelPattern {
                        source: pattern.clone(),
                        glob: Glob::new(pattern),
                    });
                }
            }
            Rule::Allow(name) => match name.rsplit_once('|') {
                None => {
                    let info = table
                        .get(name)
                        .ok_or(RuleErrorKind::UnknownCommandOrCategory)?;
                    self.change(table, info, true);
                }
                Some((base, first_arg)) => {
                    let info = table
                        .get(base)
                        .ok_or(RuleErrorKind::UnknownCommandOrCategory)?;
                    if info.parent.is_some() {
                        return Err(RuleErrorKind::FirstArgOfSubcommand);
                    }
                    if first_arg.is_empty() {
                        return Err(RuleErrorKind::Syntax);
                    }
                    if info.subcommands.is_empty() {
                        let id = info.id;
                        let arg = first_arg.as_bytes().to_vec();
                        match self.first_args.iter_mut().find(|(i, _)| *i == id) {
                            Some((_, args)) => {
                                if !args.iter().any(|a| a.eq_ignore_ascii_case(&arg)) {
                                    args.push(arg);
                                }
                            }
                            None => self.first_args.push((id, vec![arg])),
                        }
                    } else {
                        let sub = table
                            .get(name)
                            .ok_or(RuleErrorKind::UnknownCommandOrCategory)?;
                        self.change(table, sub, true);
                    }
                }
            },
            Rule::Deny(name) => {
                // Redis looks the whole name up: `-select|0` is an unknown command.
                let info = (name.matches('|').count() <= 1)
                    .then(|| table.get(name))
                    .flatten()
                    .ok_or(RuleErrorKind::UnknownCommandOrCategory)?;
                self.change(table, info, false);
            }
            Rule::AllowCategory(cat) | Rule::DenyCategory(cat) => {
                let allow = matches!(rule, Rule::AllowCategory(_));
                let cat = cat.to_ascii_lowercase();
                if !CATEGORIES.contains(&cat.as_str())
                    && !table.categories().contains(&cat.as_str())
                {
                    return Err(RuleErrorKind::UnknownCommandOrCategory);
                }
                for info in table.commands().iter().filter(|c| c.parent.is_none()) {
                    if info.in_category(&cat) {
                        self.change(table, info, allow);
                    }
                    for sub in table.subcommands(info) {
                        if sub.in_category(&cat) {
                            self.change(table, sub, allow);
                        }
                    }
                }
            }
            Rule::Selector(_) | Rule::ClearSelectors | Rule::Reset | Rule::Ignored(_) => {
                return Err(RuleErrorKind::Syntax)
            }
        }
        Ok(())
    }
}

/// Rules compiled against one server's command table: what [`RedisAcl::check`] evaluates.
/// Compile again when the table changes (another server version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisAcl {
    /// The root selector first, then each `(...)` selector in order.
    selectors: Vec<Selector>,
}

/// Why a command line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenialKind {
    /// No such command (`ERR unknown command`).
    UnknownCommand,
    /// A container without such a subcommand (`ERR unknown subcommand`).
    UnknownSubcommand,
    /// Wrong number of arguments (checked before permissions, as Redis does).
    Arity,
    /// The command (or subcommand) is not allowed.
    Command,
    /// A key the command names is not allowed (for the way it is used: read, write).
    Key,
    /// A channel the command names is not allowed.
    Channel,
    /// `SORT ... BY pattern` or `SORT ... GET pattern` by a user without read access to every
    /// key: Redis refuses it when the command runs (the patterns name keys no key spec sees).
    SortPattern,
}

impl DenialKind {
    /// A label for metrics and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            DenialKind::UnknownCommand => "unknown_command",
            DenialKind::UnknownSubcommand => "unknown_subcommand",
            DenialKind::Arity => "arity",
            DenialKind::Command => "noperm_command",
            DenialKind::Key => "noperm_key",
            DenialKind::Channel => "noperm_channel",
            DenialKind::SortPattern => "sort_pattern",
        }
    }
}

/// How to word a `NOPERM` error: as the newest Redis (7.2 on, the default) or as 7.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wording {
    #[default]
    Redis72,
    Redis70,
}

/// A refused command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub kind: DenialKind,
    /// The command's full name (`config|set`); for an unknown command, the name sent.
    pub command: String,
    /// The argument refused (key or channel; the subcommand for an unknown subcommand).
    pub index: usize,
    /// That argument's bytes (a key or channel name: data, not for logs that must not hold
    /// key names).
    pub subject: Vec<u8>,
    /// The first arguments, for the unknown-command error Redis words with them.
    detail: String,
}

impl Denial {
    /// The error line to send the client (without `-` and CRLF), as Redis words it.
    pub fn reply(&self, user: &str, wording: Wording) -> String {
        let text = match (self.kind, wording) {
            (DenialKind::UnknownCommand, _) => format!(
                "ERR unknown command '{}', with args beginning with: {}",
                truncate(&self.command, 128),
                self.detail
            ),
            (DenialKind::UnknownSubcommand, _) => format!(
                "ERR unknown subcommand '{}'. Try {} HELP.",
                truncate(&String::from_utf8_lossy(&self.subject), 128),
                self.command.to_ascii_uppercase()
            ),
            (DenialKind::Arity, _) => format!(
                "ERR wrong number of arguments for '{}' command",
                self.command
            ),
            (DenialKind::SortPattern, _) => format!(
                "ERR {} option of SORT denied due to insufficient ACL permissions.",
                String::from_utf8_lossy(&self.subject)
            ),
            (DenialKind::Command, Wording::Redis72) => format!(
                "NOPERM User {user} has no permissions to run the '{}' command",
                self.command
            ),
            (DenialKind::Command, Wording::Redis70) => format!(
                "NOPERM this user has no permissions to run the '{}' command",
                self.command
            ),
            (DenialKind::Key, Wording::Redis72) => "NOPERM No permissions to access a key".into(),
            (DenialKind::Key, Wording::Redis70) => {
                "NOPERM this user has no permissions to access one of the keys used as arguments"
                    .into()
            }
            (DenialKind::Channel, Wording::Redis72) => {
                "NOPERM No permissions to access a channel".into()
            }
            (DenialKind::Channel, Wording::Redis70) => {
                "NOPERM this user has no permissions to access one of the channels used as \
                 arguments"
                    .into()
            }
        };
        text.replace(['\r', '\n'], " ")
    }

    /// What `ACL DRYRUN` (Redis 7.0) answers for this denial: names the key or channel.
    pub fn dryrun_message(&self) -> String {
        let subject = String::from_utf8_lossy(&self.subject);
        match self.kind {
            DenialKind::Command => format!(
                "This user has no permissions to run the '{}' command",
                self.command
            ),
            DenialKind::Key => {
                format!("This user has no permissions to access the '{subject}' key")
            }
            DenialKind::Channel => {
                format!("This user has no permissions to access the '{subject}' channel")
            }
            DenialKind::UnknownCommand | DenialKind::UnknownSubcommand => {
                format!("Command '{}' not found", self.command)
            }
            DenialKind::Arity => {
                format!("wrong number of arguments for '{}' command", self.command)
            }
            DenialKind::SortPattern => format!(
                "{} option of SORT denied due to insufficient ACL permissions.",
                String::from_utf8_lossy(&self.subject)
            ),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The verdict on one command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'t> {
    /// Allowed; the command as the table knows it (flags, keys) for the caller's use.
    Allowed(&'t CommandInfo),
    Denied(Denial),
}

/// Redis's ACL result codes: the most relevant error across selectors is the highest.
const DENIED_CMD: u8 = 1;
const DENIED_KEY: u8 = 2;
const DENIED_CHANNEL: u8 = 4;

impl RedisAcl {
    /// Resolve `rules` against `table`, applying them in order to a new user (no commands,
    /// keys or channels), as `ACL SETUSER name reset <rules>` would.
    pub fn compile(rules: &AclRules, table: &CommandTable) -> Result<RedisAcl, AclError> {
        let mut selectors = vec![Selector::new(table.len())];
        for rule in &rules.rules {
            let err = |kind| rule_error(describe(rule).as_bytes(), kind);
            match rule {
                Rule::Ignored(_) => {}
                Rule::ClearSelectors => selectors.truncate(1),
                Rule::Reset => {
                    selectors.truncate(1);
                    selectors[0] = Selector::new(table.len());
                }
                Rule::Selector(inner) => {
                    let mut s = Selector::new(table.len());
                    for r in inner {
                        s.apply(table, r).map_err(err)?;
                    }
                    selectors.push(s);
                }
                other => selectors[0].apply(table, other).map_err(err)?,
            }
        }
        Ok(RedisAcl { selectors })
    }

    /// [`DEFAULT_RULES`] compiled against `table`.
    pub fn default_for(table: &CommandTable) -> RedisAcl {
        RedisAcl::compile(&AclRules::default_rules(), table)
            .expect("the default rules name only @all and @dangerous, which always exist")
    }

    /// Decide a command line (`args[0]` is the command name) as Redis would for a user with
    /// these rules: unknown command, then arity, then the permissions of each selector.
    pub fn check<'t, A: Args + ?Sized>(&self, table: &'t CommandTable, args: &A) -> Verdict<'t> {
        let mut keys = Vec::new();
        self.check_with(table, args, &mut keys)
    }

    /// [`RedisAcl::check`] with a caller-kept buffer for the keys (no allocation once warm);
    /// on return it holds the command's keys whatever the verdict, if any had to be found.
    pub fn check_with<'t, A: Args + ?Sized>(
        &self,
        table: &'t CommandTable,
        args: &A,
        keys: &mut Vec<KeyRef>,
    ) -> Verdict<'t> {
        keys.clear();
        let arg = |i: usize| args.arg(i).unwrap_or_default();
        let info = match table.lookup(args) {
            Lookup::Found(info) => info,
            Lookup::UnknownCommand => {
                let mut detail = String::new();
                let mut i = 1;
                while i < args.argc() && detail.len() < 128 {
                    let room = 128 - detail.len();
                    let a = String::from_utf8_lossy(arg(i));
                    detail.push('\'');
                    detail.push_str(truncate(&a, room));
                    detail.push_str("' ");
                    i += 1;
                }
                return Verdict::Denied(Denial {
                    kind: DenialKind::UnknownCommand,
                    command: String::from_utf8_lossy(arg(0)).into_owned(),
                    index: 0,
                    subject: arg(0).to_vec(),
                    detail,
                });
            }
            Lookup::UnknownSubcommand(container) => {
                return Verdict::Denied(Denial {
                    kind: DenialKind::UnknownSubcommand,
                    command: String::from_utf8_lossy(arg(0)).into_owned(),
                    index: 1,
                    subject: arg(1).to_vec(),
                    detail: container.name.clone(),
                })
            }
        };
        if !info.arity_ok(args.argc()) {
            return Verdict::Denied(Denial {
                kind: DenialKind::Arity,
                command: info.name.clone(),
                index: 0,
                subject: Vec::new(),
                detail: String::new(),
            });
        }
        let mut keys_found = false;
        let mut relevant = DENIED_CMD;
        let (mut local_index, mut last_index) = (0usize, 0usize);
        for selector in &self.selectors {
            let result = self.check_selector(
                selector,
                table,
                info,
                args,
                keys,
                &mut keys_found,
                &mut local_index,
            );
            if result == 0 {
                return match self.sort_denial(table, info, args, keys) {
                    Some(denial) => Verdict::Denied(denial),
                    None => Verdict::Allowed(info),
                };
            }
            if result > relevant || (result == relevant && local_index > last_index) {
                relevant = result;
                last_index = local_index;
            }
        }
        let kind = match relevant {
            DENIED_KEY => DenialKind::Key,
            DENIED_CHANNEL => DenialKind::Channel,
            _ => DenialKind::Command,
        };
        Verdict::Denied(Denial {
            kind,
            command: info.name.clone(),
            index: last_index,
            subject: if kind == DenialKind::Command {
                Vec::new()
            } else {
                arg(last_index).to_vec()
            },
            detail: String::new(),
        })
    }

    /// Whether some selector allows everything: every command, key and channel. Otherwise a
    /// script (`EVAL`, `FCALL`...) can do more than these rules allow, because Redis checks the
    /// commands a script runs against the server-side user, not against these rules: refuse
    /// scripts for such users, or log in to the server as a Redis user with the same rules.
    pub fn is_unrestricted(&self) -> bool {
        self.selectors
            .iter()
            .any(|s| s.all_commands && s.all_keys && s.all_channels)
    }

    /// What `sortCommand` refuses after the ACL check passed: a `BY` pattern with `*`, or a
    /// `GET`, unless a selector that allows this line reads every key
    /// (`ACLUserCheckCmdWithUnrestrictedKeyAccess`). The options are walked as SORT walks
    /// them, so a line SORT rejects for its syntax first is left to the server.
    fn sort_denial<A: Args + ?Sized>(
        &self,
        table: &CommandTable,
        info: &CommandInfo,
        args: &A,
        keys: &mut Vec<KeyRef>,
    ) -> Option<Denial> {
        let readonly = match info.name.as_str() {
            "sort" => false,
            "sort_ro" => true,
            _ => return None,
        };
        let mut full_read: Option<bool> = None;
        let mut full = |keys: &mut Vec<KeyRef>| {
            *full_read.get_or_insert_with(|| {
                keys.clear();
                let (mut found, mut index) = (false, 0);
                self.selectors.iter().any(|s| {
                    s.reads_every_key()
                        && self.check_selector(s, table, info, args, keys, &mut found, &mut index)
                            == 0
                })
            })
        };
        let argc = args.argc();
        let arg = |i: usize| args.arg(i).unwrap_or_default();
        let is = |i: usize, word: &str| arg(i).eq_ignore_ascii_case(word.as_bytes());
        let deny = |option: &str, index: usize| Denial {
            kind: DenialKind::SortPattern,
            command: info.name.clone(),
            index,
            subject: option.as_bytes().to_vec(),
            detail: String::new(),
        };
        let mut j = 2;
        while j < argc {
            let left = argc - j - 1;
            if is(j, "asc") || is(j, "desc") || is(j, "alpha") {
            } else if is(j, "limit") && left >= 2 {
                let long = |i: usize| sumun_wire::resp::parse_integer(arg(i)).is_some();
                if !long(j + 1) || !long(j + 2) {
                    return None;
                }
                j += 2;
            } else if !readonly && is(j, "store") && left >= 1 {
                j += 1;
            } else if is(j, "by") && left >= 1 {
                // C reads the pattern as a string: a NUL ends it.
                let pattern = arg(j + 1).split(|&b| b == 0).next().unwrap_or_default();
                if pattern.contains(&b'*') && !full(keys) {
                    return Some(deny("BY", j));
                }
                j += 1;
            } else if is(j, "get") && left >= 1 {
                if !full(keys) {
                    return Some(deny("GET", j));
                }
                j += 1;
            } else {
                return None;
            }
            j += 1;
        }
        None
    }

    /// `ACLSelectorCheckCmd`: 0 when allowed, else a `DENIED_*` code with `index` set for keys
    /// and channels.
    #[allow(clippy::too_many_arguments)]
    fn check_selector<A: Args + ?Sized>(
        &self,
        s: &Selector,
        table: &CommandTable,
        info: &CommandInfo,
        args: &A,
        keys: &mut Vec<KeyRef>,
        keys_found: &mut bool,
        index: &mut usize,
    ) -> u8 {
        if !s.all_commands && !info.has_flag("no_auth") && !s.bit(info.id) {
            let first_arg_ok = args.argc() >= 2
                && s.first_args
                    .iter()
                    .find(|(id, _)| *id == info.id)
                    .is_some_and(|(_, allowed)| {
                        let i = if info.parent.is_some() { 2 } else { 1 };
                        let given = args.arg(i).unwrap_or_default();
                        allowed.iter().any(|a| a.eq_ignore_ascii_case(given))
                    });
            if !first_arg_ok {
                return DENIED_CMD;
            }
        }
        if !s.all_keys && info.may_have_keys() {
            if !*keys_found {
                table.keys(info, args, keys);
                *keys_found = true;
            }
            for key in keys.iter() {
                let name = args.arg(key.index).unwrap_or_default();
                let (read, write) = (key.flags.reads(), key.flags.writes());
                let ok = s
                    .keys
                    .iter()
                    .any(|p| (p.read || !read) && (p.write || !write) && p.glob.matches(name));
                if !ok {
                    *index = key.index;
                    return DENIED_KEY;
                }
            }
        }
        if !s.all_channels {
            if let Some(flags) = info.channel_kind() {
                if !flags.contains(ChannelFlags::UNSUBSCRIBE) {
                    let literal = flags.contains(ChannelFlags::PATTERN);
                    let mut channels = Vec::new();
                    table.channels(info, args, &mut channels);
                    for ch in channels {
                        let name = args.arg(ch.index).unwrap_or_default();
                        let ok = s.channels.iter().any(|p| {
                            if literal {
                                p.source == name
                            } else {
                                p.glob.matches(name)
                            }
                        });
                        if !ok {
                            *index = ch.index;
                            return DENIED_CHANNEL;
                        }
                    }
                }
            }
        }
        0
    }
}

/// A rule as text, for error messages (never a password: those are refused before).
fn describe(rule: &Rule) -> String {
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match rule {
        Rule::AllKeys => "allkeys".into(),
        Rule::ResetKeys => "resetkeys".into(),
        Rule::AllChannels => "allchannels".into(),
        Rule::ResetChannels => "resetchannels".into(),
        Rule::AllCommands => "allcommands".into(),
        Rule::NoCommands => "nocommands".into(),
        Rule::Keys {
            read,
            write,
            pattern,
        } => match (read, write) {
            (true, true) => format!("~{}", lossy(pattern)),
            (true, false) => format!("%R~{}", lossy(pattern)),
            (false, true) => format!("%W~{}", lossy(pattern)),
            (false, false) => format!("%~{}", lossy(pattern)),
        },
        Rule::Channels(p) => format!("&{}", lossy(p)),
        Rule::Allow(c) => format!("+{c}"),
        Rule::Deny(c) => format!("-{c}"),
        Rule::AllowCategory(c) => format!("+@{c}"),
        Rule::DenyCategory(c) => format!("-@{c}"),
        Rule::Selector(inner) => format!(
            "({})",
            inner.iter().map(describe).collect::<Vec<_>>().join(" ")
        ),
        Rule::ClearSelectors => "clearselectors".into(),
        Rule::Reset => "reset".into(),
        Rule::Ignored(w) => w.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_as_stringmatchlen() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"*", b"anything", true),
            (b"*", b"", false),
            (b"", b"", true),
            (b"a*", b"a", true),
            (b"app:*", b"app:1", true),
            (b"app:*", b"ap", false),
            (b"a?c", b"abc", true),
            (b"a?c", b"ac", false),
            (b"[a-c]x", b"bx", true),
            (b"[c-a]x", b"bx", true),
            (b"[^a-c]x", b"bx", false),
            (b"[^a-c]x", b"dx", true),
            (b"[abc", b"b", true),
            (b"[a-]x", b"]", true),
            (b"\\*", b"*", true),
            (b"\\*", b"a", false),
            (b"a\\", b"a\\", true),
            (b"[\\]]", b"]", true),
            (b"*a*b", b"xxaxxb", true),
            (b"*a*b", b"xxaxx", false),
            (b"a**", b"a", true),
            (b"*?", b"a", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(
                glob_match(p, s),
                *want,
                "{:?} ~ {:?}",
                String::from_utf8_lossy(p),
                String::from_utf8_lossy(s)
            );
        }
        // Exponential for a naive matcher; linear-ish here.
        let p = b"a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let s = vec![b'a'; 100_000];
        assert!(!glob_match(p, &s));
    }

    #[test]
    fn parse_refuses_passwords_without_echoing_them() {
        for rules in [
            ">s3cret",
            "nopass",
            "resetpass",
            "#abc",
            "<s3cret",
            "!abc",
            "(>s3cret)",
        ] {
            let err = AclRules::parse(rules).expect_err("password rule");
            assert_eq!(err, AclError::Password);
            assert!(!err.to_string().contains("s3cret"));
        }
        assert!(matches!(
            AclRules::parse("off"),
            Err(AclError::Rule {
                kind: RuleErrorKind::UserState,
                ..
            })
        ));
        assert!(matches!(
            AclRules::parse("(~a +get"),
            Err(AclError::UnmatchedParenthesis(_))
        ));
        assert!(matches!(
            AclRules::parse("%X~a"),
            Err(AclError::Rule {
                kind: RuleErrorKind::Syntax,
                ..
            })
        ));
        let rules = AclRules::parse("on +@all -@dangerous ~app:* %R~ro:* ( ~x +get )").expect("ok");
        assert_eq!(rules.rules().len(), 6);
    }
}
