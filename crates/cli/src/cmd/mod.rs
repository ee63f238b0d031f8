pub mod flows;
pub mod http;
pub mod quickstart;
pub mod serve;
pub mod vault;
