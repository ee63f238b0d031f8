//! Store tests: round trips, integrity, key rotation, concurrency within one process.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::master::LocalMasterKey;
use crate::token::VerifyPolicy;

static N: AtomicU32 = AtomicU32::new(0);

pub(crate) fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sumun-vault-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&d);
    d
}

fn key_pair() -> (Box<dyn MasterKey>, impl Fn() -> Box<dyn MasterKey>) {
    let k = LocalMasterKey::generate().unwrap();
    let text = k.to_base64();
    let again = move || -> Box<dyn MasterKey> {
        Box::new(LocalMasterKey::from_base64(text.expose_str().unwrap()).unwrap())
    };
    (Box::new(k), again)
}

fn secret(s: &str) -> SecretBytes {
    SecretBytes::from_slice(s.as_bytes())
}

#[test]
fn put_get_list_and_versions() {
    let dir = temp_dir();
    let (k, again) = key_pair();
    let mut v = Vault::init(&dir, k, None).unwrap();
    let meta = SecretMeta {
        kind: Some(SecretKind::Postgres),
        address: Some("127.0.0.1:5432".into()),
        username: Some("app".into()),
        ..Default::default()
    };
    assert_eq!(v.put("pg/app", &secret("first-pw"), meta).unwrap(), 1);
    assert_eq!(
        v.put("pg/app", &secret("second-pw"), SecretMeta::default())
            .unwrap(),
        2
    );

    let v2 = Vault::open_with(&dir, again()).unwrap();
    assert_eq!(v2.get("pg/app").unwrap().expose(), b"second-pw");
    assert_eq!(
        v2.get_stage("pg/app", Stage::Previous)
            .unwrap()
            .unwrap()
            .expose(),
        b"first-pw"
    );
    assert!(v2.get_stage("pg/app", Stage::Pending).unwrap().is_none());
    let info = v2.info("pg/app").unwrap();
    assert_eq!(info.kind, SecretKind::Postgres);
    assert_eq!(info.username.as_deref(), Some("app"));
    assert_eq!((info.current_version, info.previous_version), (2, Some(1)));
    assert_eq!(v2.list().len(), 1);
    assert!(matches!(v2.get("nope"), Err(StoreError::SecretNotFound(_))));

    // Nothing in the file is plaintext.
    let raw = fs::read_to_string(dir.join(STORE_FILE)).unwrap();
    assert!(!raw.contains("first-pw") && !raw.contains("second-pw"));

    let mut v3 = Vault::open_with(&dir, again()).unwrap();
    v3.delete("pg/app").unwrap();
    assert!(v3.list().is_empty());
    assert!(v3
        .put("bad name", &secret("x"), SecretMeta::default())
        .is_err());
}

#[test]
fn init_refuses_existing_vault() {
    let dir = temp_dir();
    let (k, again) = key_pair();
    Vault::init(&dir, k, None).unwrap();
    assert!(matches!(
        Vault::init(&dir, again(), None),
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        Vault::open_with(&temp_dir(), again()),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn wrong_master_key_is_reported_as_such() {
    let dir = temp_dir();
    let (k, _) = key_pair();
    let mut v = Vault::init(&dir, k, None).unwrap();
    v.put("a", &secret("x"), SecretMeta::default()).unwrap();
    let other = LocalMasterKey::generate().unwrap();
    let err = Vault::open_with(&dir, Box::new(other)).unwrap_err();
    assert!(matches!(err, StoreError::WrongMasterKey { .. }), "{err}");
    assert!(err.to_string().starts_with("wrong master key"));
}

#[test]
fn every_flipped_byte_is_refused() {
    let dir = temp_dir();
    let (k, again) = key_pair();
    let mut v = Vault::init(&dir, k, None).unwrap();
    v.put("a", &secret("value-a"), SecretMeta::default())
        .unwrap();
    v.set_user_password("alice", &secret("pw")).unwrap();
    let path = dir.join(STORE_FILE);
    let good = fs::read(&path).unwrap();
    for i in 0..good.len() {
        for bit in [0x01u8, 0x20, 0x80] {
            let mut bad = good.clone();
            bad[i] ^= bit;
            fs::write(&path, &bad).unwrap();
            match Vault::open_with(&dir, again()) {
                Ok(_) => panic!("flipped byte {i} (bit {bit:#x}) was accepted"),
                Err(e) => {
                    assert!(matches!(e, StoreError::Corrupted(_)), "byte {i}: {e}");
                    assert!(e.to_string().contains("is corrupted or was tampered with"));
                }
            }
        }
    }
    // Truncation and an empty file too.
    for cut in [0, 1, good.len() / 2, good.len() - 1] {
        fs::write(&path, &good[..cut]).unwrap();
        assert!(matches!(
            Vault::open_with(&dir, again()),
            Err(StoreError::Corrupted(_))
        ));
    }
    fs::write(&path, &good).unwrap();
    assert_eq!(
        Vault::open_with(&dir, again())
            .unwrap()
            .get("a")
            .unwrap()
            .expose(),
        b"value-a"
    );
}

#[test]
fn ciphertext_moved_to_another_name_fails() {
    let dir = temp_dir();
    let (k, _) = key_pair();
    let mut v = Vault::init(&dir, k, None).unwrap();
    v.put("a", &secret("value-a"), SecretMeta::default())
        .unwrap();
    v.put("b", &secret("value-b"), SecretMeta::default())
        .unwrap();
    // Forge with the real keys (a correct file MAC), so only the associated data can object.
    let sealed_a = v.body.secrets["a"].current.sealed.clone();
    v.body.secrets.get_mut("b").unwrap().current.sealed = sealed_a;
    v.write().unwrap();
    let err = v.get("b").unwrap_err();
    assert!(matches!(err, StoreError::Decrypt { .. }), "{err}");
    assert!(!err.to_string().contains("value-a"));
    assert_eq!(v.get("a").unwrap().expose(), b"value-a");
}

#[test]
fn pending_stage_and_promote() {
    let dir = temp_dir();
    let (k, _) = key_pair();
    let mut v = Vault::init(&dir, k, None).unwrap();
    v.put("s", &secret("v1"), SecretMeta::default()).unwrap();
    assert_eq!(v.stage_pending("s", &secret("v2")).unwrap(), (2, true));
    // A rerun reuses the staged value rather than minting another.
    assert_eq!(v.stage_pending("s", &secret("other")).unwrap(), (2, false));
    let c: Vec<_> = v
        .login_candidates("s")
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(c, vec![Stage::Current, Stage::Pending]);
    assert_eq!(v.promote_pending("s").unwrap(), 2);
    assert_eq!(v.get("s").unwrap().expose(), b"v2");
    assert_eq!(
        v.get_stage("s", Stage::Previous).unwrap().unwrap().expose(),
        b"v1"
    );
    assert!(matches!(
        v.promote_pending("s"),
        Err(StoreError::NoPending(_))
    ));
}

#[test]
fn key_rotation_rewraps_and_keeps_old_tokens_valid() {
    let dir = temp_dir();
    let (k, again) = key_pair();
    let mut v = Vault::init(&dir, k, None).unwrap();
    v.put("a", &secret("value-a"), SecretMeta::default())
        .unwrap();
    v.set_user_password("alice", &secret("pw")).unwrap();
    let now = now_unix();
    let old_signer = v.token_signer().unwrap();
    let old_token = old_signer.issue("alice", None, "gw", now, 900).unwrap();

    let r = v.rotate_keys(3600 + 30).unwrap();
    assert_eq!(r.kek_generation, 2);
    assert_eq!(r.items_rewrapped, 3); // secret, user, old signing key
    let v2 = Vault::open_with(&dir, again()).unwrap();
    assert_eq!(v2.kek_generation(), 2);
    assert_eq!(v2.get("a").unwrap().expose(), b"value-a");
    assert!(v2.user_verifiers("alice").unwrap().is_some());
    let new_signer = v2.token_signer().unwrap();
    assert_ne!(new_signer.kid(), old_signer.kid());
    let verifier = v2.token_verifier(VerifyPolicy::default()).unwrap();
    assert_eq!(
        verifier
            .verify(old_token.expose_str().unwrap(), "gw", now)
            .unwrap()
            .user,
        "alice"
    );
    let new_token = new_signer.issue("bob", None, "gw", now, 900).unwrap();
    assert!(verifier
        .verify(new_token.expose_str().unwrap(), "gw", now)
        .is_ok());

    // With no grace, the retired key is dropped on the next rotation and its tokens fail.
    let mut v3 = Vault::open_with(&dir, again()).unwrap();
    v3.body.signing_keys[0].retired = Some(now - 10);
    v3.write().unwrap();
    v3.rotate_keys(0).unwrap();
    let verifier = v3.token_verifier(VerifyPolicy::default()).unwrap();
    assert_eq!(
        verifier
            .verify(old_token.expose_str().unwrap(), "gw", now)
            .unwrap_err()
            .reason(),
        "unknown_key"
    );
    assert_eq!(v3.get("a").unwrap().expose(), b"value-a");
}

#[test]
fn user_verifiers_do_not_contain_the_password() {
    let dir = temp_dir();
    let (k, _) = key_pair();
    let mut v = Vault::init(&dir, k, None).unwrap();
    v.set_user_password("alice", &secret("pencil-pencil"))
        .unwrap();
    let pv = v.user_verifiers("alice").unwrap().unwrap();
    let scram = pv.scram().unwrap();
    assert_eq!(scram.iterations, 4096);
    let again = crate::scram::ScramVerifier::derive_with(b"pencil-pencil", &scram.salt, 4096);
    assert_eq!(again, scram);
    assert!(!pv.scram_sha256.contains("pencil"));
    assert!(v.user_verifiers("bob").unwrap().is_none());
}

#[test]
fn reload_sees_other_writers() {
    let dir = temp_dir();
    let (k, again) = key_pair();
    let mut writer = Vault::init(&dir, k, None).unwrap();
    let mut reader = Vault::open_with(&dir, again()).unwrap();
    assert!(!reader.has_changed());
    assert!(!reader.reload().unwrap());
    writer
        .put("a", &secret("x"), SecretMeta::default())
        .unwrap();
    assert!(reader.has_changed());
    assert!(reader.reload().unwrap());
    assert_eq!(reader.get("a").unwrap().expose(), b"x");
    // A second handle's write does not lose the first's: writes re-read under the lock.
    let mut other = Vault::open_with(&dir, again()).unwrap();
    reader
        .put("b", &secret("y"), SecretMeta::default())
        .unwrap();
    other.put("c", &secret("z"), SecretMeta::default()).unwrap();
    let names: Vec<_> = other.list().into_iter().map(|i| i.name).collect();
    assert_eq!(names, vec!["a", "b", "c"]);
}

#[test]
fn concurrent_threads_lose_nothing() {
    let dir = temp_dir();
    let (k, again) = key_pair();
    Vault::init(&dir, k, None).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let dir = dir.clone();
            let key = again();
            std::thread::spawn(move || {
                let mut v = Vault::open_with(&dir, key).unwrap();
                for i in 0..10 {
                    v.put(&format!("t{t}/s{i}"), &secret("v"), SecretMeta::default())
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(Vault::open_with(&dir, again()).unwrap().list().len(), 40);
}

#[test]
fn passphrase_vault_records_kdf() {
    let dir = temp_dir();
    let mut params = KdfParams::new_random().unwrap();
    params.m_cost_kib = 1024;
    let k = LocalMasterKey::from_passphrase(b"pass phrase", &params).unwrap();
    Vault::init(&dir, Box::new(k), Some(params.clone())).unwrap();
    let bytes = fs::read(dir.join(STORE_FILE)).unwrap();
    let (body, _, _) = parse_unverified(&dir.join(STORE_FILE), &bytes).unwrap();
    assert_eq!(body.master.kdf, Some(params.clone()));
    let k2 = LocalMasterKey::from_passphrase(b"pass phrase", &params).unwrap();
    assert!(Vault::open_with(&dir, Box::new(k2)).is_ok());
    let k3 = LocalMasterKey::from_passphrase(b"wrong", &params).unwrap();
    assert!(matches!(
        Vault::open_with(&dir, Box::new(k3)),
        Err(StoreError::WrongMasterKey { .. })
    ));
}

#[test]
fn debug_output_redacts() {
    let dir = temp_dir();
    let (k, _) = key_pair();
    let mut v = Vault::init(&dir, k, None).unwrap();
    v.put("a", &secret("super-secret-value"), SecretMeta::default())
        .unwrap();
    let dbg = format!(
        "{v:?} {:?} {:?}",
        v.get("a").unwrap(),
        v.token_signer().unwrap()
    );
    assert!(!dbg.contains("super-secret-value"));

    // Every other type that holds a key, a verifier or a password.
    v.set_user_password("alice", &secret("alice-password"))
        .unwrap();
    let pv = v.user_verifiers("alice").unwrap().unwrap();
    let scram = pv.scram().unwrap();
    let key = LocalMasterKey::generate().unwrap();
    let key_b64 = key.to_base64();
    let pw = secret("login-password");
    let login = crate::rotation::Login {
        address: "127.0.0.1:5432",
        username: "app",
        password: &pw,
        database: None,
    };
    let token = v
        .token_signer()
        .unwrap()
        .issue("alice", None, "gw", now_unix(), 900)
        .unwrap();
    let dbg = format!("{pv:?} {scram:?} {key:?} {login:?} {token:?} {key_b64:?}");
    for leak in [
        pv.scram_sha256.as_str(),
        pv.mysql_native.as_str(),
        &crypto::b64(&scram.stored_key),
        &crypto::b64(&scram.server_key),
        key_b64.expose_str().unwrap(),
        "login-password",
        token.expose_str().unwrap(),
    ] {
        assert!(!dbg.contains(leak), "Debug shows {leak}: {dbg}");
    }
    assert!(dbg.contains("127.0.0.1:5432"), "{dbg}");
}

#[test]
fn a_writer_killed_before_its_rename_loses_nothing() {
    let dir = temp_dir();
    let (k, again) = key_pair();
    let mut v = Vault::init(&dir, k, None).unwrap();
    v.put("a", &secret("value-a"), SecretMeta::default())
        .unwrap();
    let now = now_unix();
    let token = v
        .token_signer()
        .unwrap()
        .issue("u", None, "gw", now, 900)
        .unwrap();
    // What a `keys rotate` killed mid-write leaves behind: a partial temp file next to the
    // untouched store.
    let good = fs::read(dir.join(STORE_FILE)).unwrap();
    let stale = dir.join(format!(".{STORE_FILE}.999999.tmp"));
    fs::write(&stale, &good[..good.len() / 2]).unwrap();
    let mut v2 = Vault::open_with(&dir, again()).unwrap();
    assert_eq!(v2.get("a").unwrap().expose(), b"value-a");
    let verifier = v2.token_verifier(VerifyPolicy::default()).unwrap();
    assert!(verifier
        .verify(token.expose_str().unwrap(), "gw", now)
        .is_ok());
    // The next write (under the lock) clears the leftover and completes the rotation.
    v2.rotate_keys(3600 + 30).unwrap();
    assert!(!stale.exists());
    let v3 = Vault::open_with(&dir, again()).unwrap();
    assert_eq!(v3.kek_generation(), 2);
    assert_eq!(v3.get("a").unwrap().expose(), b"value-a");
    assert!(v3
        .token_verifier(VerifyPolicy::default())
        .unwrap()
        .verify(token.expose_str().unwrap(), "gw", now)
        .is_ok());
}
