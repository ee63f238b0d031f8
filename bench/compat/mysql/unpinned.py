"""pytest plugin for the `*-shared` runs of run.sh (`-p unpinned`): PyMySQL without its
`SET NAMES` after login.

PyMySQL sends `SET NAMES <charset>` right after every login, and Sumun's transaction mode pins a
client that sets a session variable to its server for the rest of its session (docs/mysql.md).
So with stock PyMySQL every transaction-mode client is pinned and its server is never shared,
which leaves the sharing itself untested. This plugin leaves that one statement out of
`Connection.connect` (the login packet already asks for the same character set: PyMySQL puts
the charset's default collation id in it, and with `SET NAMES utf8mb4` MariaDB 10.11 picks the
same default collation, utf8mb4_general_ci). Everything else the suite does is unchanged; a
test's own `set_character_set()` call still sends `SET NAMES`. The `*-shared` runs also give
`autocommit = true` in databases.json, so PyMySQL sends no `SET AUTOCOMMIT = 0` either.
"""

import pymysql.connections

_connect = pymysql.connections.Connection.connect


def _connect_without_set_names(self, sock=None):
    def skip_once(charset, collation=None):
        # the login's own SET NAMES: skipped once, later calls go to the real method
        del self.set_character_set

    self.set_character_set = skip_once
    try:
        return _connect(self, sock)
    finally:
        self.__dict__.pop("set_character_set", None)


pymysql.connections.Connection.connect = _connect_without_set_names
