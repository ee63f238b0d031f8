//! Feeds arbitrary bytes to the MySQL connection-phase and generic packet parsers (greeting,
//! client hello, auth switch, more data, change user, OK/ERR/EOF, prepare OK, commands,
//! COM_STMT_EXECUTE, column definitions, text rows, session state changes) under
//! capabilities taken from the input. Beyond "never panics": what parses re-encodes to bytes
//! that parse to the same value where the encoding is canonical (greeting, client response).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sumun_wire::mysql::command::{session_changes, Command, StmtExecute};
use sumun_wire::mysql::flags::Capabilities;
use sumun_wire::mysql::generic::{EofPacket, ErrPacket, OkPacket};
use sumun_wire::mysql::handshake::{
    AuthMoreData, AuthSwitchRequest, ChangeUser, ClientHello, HandshakeResponse, HandshakeV10,
};
use sumun_wire::mysql::response::PrepareOk;
use sumun_wire::mysql::resultset::{text_row, ColumnDefinition};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let mut c = [0u8; 8];
    c.copy_from_slice(&data[..8]);
    let caps = Capabilities(u64::from_le_bytes(c));
    let payload = &data[8..];

    if let Ok(hs) = HandshakeV10::parse(payload) {
        let mut out = Vec::new();
        hs.write(&mut out);
        // A canonical greeting survives a round trip when the fields fit its format.
        if let Ok(again) = HandshakeV10::parse(&out) {
            assert_eq!(again.connection_id, hs.connection_id);
            assert_eq!(again.capabilities, hs.capabilities);
        }
    }
    if let Ok(ClientHello::Response(r)) = ClientHello::parse(payload) {
        let mut out = Vec::new();
        r.write(&mut out);
        if let Ok(again) = HandshakeResponse::parse(&out) {
            assert_eq!(again.user, r.user);
            assert_eq!(again.capabilities, r.capabilities);
        }
        let _ = r.attributes().count();
        let _ = format!("{r:?}");
    }
    let _ = AuthSwitchRequest::parse(payload).map(|s| s.scramble20());
    let _ = AuthMoreData::parse(payload);
    let _ = ChangeUser::parse(payload, caps);
    let _ = OkPacket::parse(payload, caps);
    let _ = ErrPacket::parse(payload).map(|e| e.sql_state_str().map(str::len));
    let _ = EofPacket::parse(payload, caps);
    let _ = PrepareOk::parse(payload);
    let _ = Command::parse(payload);
    if let Ok(ex) = StmtExecute::parse(payload, caps.0 as u16) {
        assert!(ex.null_bitmap.len() + ex.types.len() + ex.values.len() < payload.len());
    }
    let _ = ColumnDefinition::parse(payload);
    let _ = text_row(payload).count();
    for ch in session_changes(payload) {
        let _ = ch.name_value();
    }
});
