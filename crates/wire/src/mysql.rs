//! MySQL/MariaDB client/server protocol (filled in by issue 18).
