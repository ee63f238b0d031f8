//! The words the scan cares about: keywords, function names with an injection meaning, and
//! system catalogs. One lookup per word, case-insensitive, no allocation.

/// Keywords that change what the scan expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kw {
    Select,
    Union,
    All,
    Distinct,
    From,
    Where,
    Having,
    And,
    Or,
    Xor,
    Not,
    Null,
    True,
    False,
    /// `LIKE`, `ILIKE`, `RLIKE`, `REGEXP`, `IS`: comparisons spelled as words.
    CmpWord,
    When,
    On,
    Order,
    By,
    Group,
    Limit,
    Into,
    Outfile,
    /// `INFILE`: `LOAD DATA INFILE` reads a file on the server (`LOCAL` reads the client's).
    Infile,
    Waitfor,
    Delay,
    Time,
    Program,
    Copy,
    As,
    Any,
    /// Words that begin a statement an attacker stacks after `;`.
    StackStart,
    Procedure,
}

/// Functions whose call means something to the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fun {
    /// `pg_sleep`, `sleep`, `benchmark`, `receive_message` (`dbms_pipe.`)...
    Delay,
    /// `extractvalue`, `updatexml`, `gtid_subset`: error-based extraction.
    ErrorXml,
    JsonKeys,
    Exp,
    Floor,
    Rand,
    /// `chr`, `char`: building strings a character at a time.
    Chr,
    /// `load_file`, `pg_read_file`, `xp_cmdshell`...
    File,
    /// `generate_series`: a heavy query when asked for millions of rows in a subquery.
    Series,
}

/// System catalogs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cat {
    /// `information_schema`, `pg_catalog`, `pg_class`...: schema enumeration.
    Schema,
    /// `pg_shadow`, `pg_authid`: password hashes.
    Credentials,
    /// `mysql` (a catalog only when it qualifies a name: `mysql.user`).
    MysqlSchema,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Word {
    Kw(Kw),
    Fun(Fun),
    Cat(Cat),
    Plain,
}

/// Classifies an unquoted word (or the inside of a quoted identifier).
pub(crate) fn classify(word: &[u8]) -> Word {
    let mut buf = [0u8; 20];
    let Some(slot) = buf.get_mut(..word.len()) else {
        return Word::Plain;
    };
    slot.copy_from_slice(word);
    slot.make_ascii_lowercase();
    let w: &[u8] = slot;
    use Kw::*;
    Word::Kw(match w {
        b"select" => Select,
        b"union" => Union,
        b"all" => All,
        b"distinct" => Distinct,
        b"from" => From,
        b"where" => Where,
        b"having" => Having,
        b"and" => And,
        b"or" => Or,
        b"xor" => Xor,
        b"not" => Not,
        b"null" => Null,
        b"true" => True,
        b"false" => False,
        b"like" | b"ilike" | b"rlike" | b"regexp" | b"is" => CmpWord,
        b"when" => When,
        b"on" => On,
        b"order" => Order,
        b"by" => By,
        b"group" => Group,
        b"limit" => Limit,
        b"into" => Into,
        b"outfile" | b"dumpfile" => Outfile,
        b"infile" => Infile,
        b"waitfor" => Waitfor,
        b"delay" => Delay,
        b"time" => Time,
        b"program" => Program,
        b"copy" => Copy,
        b"as" => As,
        b"any" | b"some" => Any,
        b"procedure" => Procedure,
        b"declare" | b"exec" | b"execute" | b"if" | b"begin" | b"call" | b"create" | b"drop"
        | b"insert" | b"update" | b"delete" | b"set" | b"truncate" | b"grant" | b"alter"
        | b"shutdown" => StackStart,
        _ => {
            return match w {
                b"pg_sleep" | b"pg_sleep_for" | b"pg_sleep_until" | b"sleep" | b"benchmark"
                | b"receive_message" => Word::Fun(Fun::Delay),
                b"extractvalue" | b"updatexml" | b"gtid_subset" | b"gtid_subtract" => {
                    Word::Fun(Fun::ErrorXml)
                }
                b"json_keys" => Word::Fun(Fun::JsonKeys),
                b"generate_series" => Word::Fun(Fun::Series),
                b"exp" => Word::Fun(Fun::Exp),
                b"floor" => Word::Fun(Fun::Floor),
                b"rand" => Word::Fun(Fun::Rand),
                b"chr" | b"char" => Word::Fun(Fun::Chr),
                b"load_file"
                | b"pg_read_file"
                | b"pg_read_binary_file"
                | b"pg_ls_dir"
                | b"xp_cmdshell"
                | b"sys_exec"
                | b"sys_eval" => Word::Fun(Fun::File),
                b"information_schema"
                | b"pg_catalog"
                | b"performance_schema"
                | b"pg_class"
                | b"pg_namespace"
                | b"pg_attribute"
                | b"pg_tables"
                | b"pg_database"
                | b"pg_proc"
                | b"pg_roles"
                | b"pg_user"
                | b"pg_stat_activity"
                | b"sysobjects"
                | b"syscolumns"
                | b"all_tables"
                | b"all_users" => Word::Cat(Cat::Schema),
                b"pg_shadow" | b"pg_authid" => Word::Cat(Cat::Credentials),
                b"mysql" => Word::Cat(Cat::MysqlSchema),
                _ => Word::Plain,
            };
        }
    })
}

/// A `mysql.<name>` table that holds password hashes.
pub(crate) fn is_mysql_credentials(word: &[u8]) -> bool {
    word.eq_ignore_ascii_case(b"user") || word.eq_ignore_ascii_case(b"global_priv")
}
