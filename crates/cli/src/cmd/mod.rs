pub mod serve;
pub mod vault;
