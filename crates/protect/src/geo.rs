//! Country lookup in a MaxMind-format database (`.mmdb`), read with the `maxminddb` crate.
//! Only `country.iso_code` is read, so GeoLite2/GeoIP2 Country and City databases and any
//! database with that field work. The file is untrusted input: a lookup that fails to decode
//! places the address nowhere rather than failing the connection.

use std::net::IpAddr;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("not a MaxMind DB file: {0}")]
pub struct GeoError(String);

pub struct GeoDb {
    reader: maxminddb::Reader<Vec<u8>>,
    /// `metadata.database_type`, for logs.
    pub kind: String,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb").field("kind", &self.kind).finish()
    }
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    country: Option<Country<'a>>,
}

#[derive(Deserialize)]
struct Country<'a> {
    iso_code: Option<&'a str>,
}

impl GeoDb {
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GeoDb, GeoError> {
        let reader = maxminddb::Reader::from_source(bytes).map_err(|e| GeoError(e.to_string()))?;
        let kind = reader.metadata().database_type.clone();
        Ok(GeoDb { reader, kind })
    }

    /// The ISO 3166-1 alpha-2 code (upper case) of the country the database places `ip` in.
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let found = self.reader.lookup(crate::ipset::canonical(ip)).ok()?;
        let record: Record<'_> = found.decode().ok()??;
        let code = record.country?.iso_code?;
        (code.len() == 2).then(|| code.to_ascii_uppercase())
    }
}
