pub mod flows;
pub mod flows_sql;
pub mod http;
pub mod quickstart;
pub mod serve;
pub mod vault;
