//! Wire codecs: bytes in, typed frames out, and back. Nothing here touches a socket;
//! decoders never panic on any input and never allocate more than the bytes they were given.

pub mod mysql;
pub mod postgres;
pub mod proxy;
pub mod resp;
pub mod sql;
