//! Known values computed independently with Python's hashlib (and, for Ed25519, RFC 8032's
//! arithmetic written out in Python with MariaDB's `SHA512(password)` key expansion, the
//! signature checked with the `cryptography` package's verifier).

use super::*;

const PW: &[u8] = b"s3cret-pw";

fn nonce20() -> Vec<u8> {
    (1..=20).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn native_password_known_value_and_verification() {
    let r = native_password_response(PW, &nonce20());
    assert_eq!(hex(&r), "8177eaab2d5d1b12055ba9539c52275dd9bd926d");
    let v = NativeVerifier::from_password(PW);
    assert_eq!(
        v,
        NativeVerifier::from_hash_text("*36CB988D2F656A3DC7A46D099223E8AC1B3B6145").unwrap()
    );
    assert_eq!(
        crate::scram::mysql_native_hash(PW),
        "*36CB988D2F656A3DC7A46D099223E8AC1B3B6145"
    );
    assert_eq!(
        v.to_hash_text(),
        "*36CB988D2F656A3DC7A46D099223E8AC1B3B6145"
    );
    assert!(v.verify(&nonce20(), &r));
    let mut bad = r.clone();
    bad[0] ^= 1;
    assert!(!v.verify(&nonce20(), &bad));
    assert!(!v.verify(&[0; 20], &r));
    assert!(!v.verify(&nonce20(), &[]));
    assert!(native_password_response(b"", &nonce20()).is_empty());
    assert!(NativeVerifier::from_hash_text("36CB").is_err());
}

#[test]
fn caching_sha2_known_value_and_verification() {
    let r = caching_sha2_response(PW, &nonce20());
    assert_eq!(
        hex(&r),
        "187c15a042b72a8fc1e1c7d4e9ff2e59b4d0a079e3a634c5ea542fb14d775d94"
    );
    let v = CachingSha2Verifier::from_password(PW);
    assert_eq!(
        v,
        CachingSha2Verifier::from_hex(
            "701829f203f2359d1c13085599e0b62aa7f1458c32968f804a0a3c38039c9b9d"
        )
        .unwrap()
    );
    assert_eq!(CachingSha2Verifier::from_hex(&v.to_hex()).unwrap(), v);
    assert!(v.verify(&nonce20(), &r));
    assert!(!v.verify(&nonce20(), &r[..31]));
    assert!(!v.verify(&[9; 20], &r));
    assert!(v.verify_cleartext(b"s3cret-pw\0"));
    assert!(v.verify_cleartext(PW));
    assert!(!v.verify_cleartext(b"s3cret-pW"));
}

#[test]
fn caching_sha2_rsa_round_trip() {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey};
    let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let der = private.public_key().as_der().unwrap();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        crypto::b64(der.as_ref())
    );
    let nonce = nonce20();
    let sealed = caching_sha2_rsa_encrypt(PW, &nonce, pem.as_bytes()).unwrap();
    assert_eq!(sealed.len(), 256);
    let oaep = OaepPrivateDecryptingKey::new(private).unwrap();
    let mut out = vec![0u8; 256];
    let plain = oaep
        .decrypt(&OAEP_SHA1_MGF1SHA1, &sealed, &mut out, None)
        .unwrap();
    let clear: Vec<u8> = plain
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ nonce[i % nonce.len()])
        .collect();
    assert_eq!(clear, b"s3cret-pw\0");
    // DER works too; garbage and an oversized password are named errors.
    assert!(caching_sha2_rsa_encrypt(PW, &nonce, der.as_ref()).is_ok());
    assert_eq!(
        caching_sha2_rsa_encrypt(PW, &nonce, b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END"),
        Err(MysqlAuthError::PublicKey)
    );
    assert!(matches!(
        caching_sha2_rsa_encrypt(&[b'x'; 300], &nonce, pem.as_bytes()),
        Err(MysqlAuthError::PasswordTooLong { .. })
    ));
}

#[test]
fn ed25519_known_value_and_verification() {
    let nonce: Vec<u8> = (0..32).collect();
    assert_eq!(
        hex(&ed25519_public_key(PW)),
        "f0264e769341c5d594babd28a77b16298392568577fec0a9d3b2c2ed4b1ba1a8"
    );
    let v = Ed25519Verifier::from_password(PW);
    assert_eq!(v.to_base64(), "8CZOdpNBxdWUur0op3sWKYOSVoV3/sCp07LC7Usboag");
    assert_eq!(Ed25519Verifier::from_base64(&v.to_base64()).unwrap(), v);
    let sig = ed25519_response(PW, &nonce);
    assert_eq!(
        hex(&sig),
        "3d7971b97a57f529147dc12ac81d853f3768d802159240018848e5dcde02d534\
         667305809f7b06dc176b10f3967dfeb307e4bdd00ea77672a89418c4ce017e0e"
    );
    assert!(v.verify(&nonce, &sig));
    assert!(!v.verify(&nonce[1..], &sig));
    assert!(!Ed25519Verifier::from_password(b"other").verify(&nonce, &sig));
    assert!(Ed25519Verifier::from_base64("short").is_err());
}

#[test]
fn nothing_secret_in_debug() {
    let v = MysqlVerifiers::from_password(PW);
    let dbg = format!("{v:?} {:?} {:?} {:?}", v.native, v.caching_sha2, v.ed25519);
    assert!(!dbg.to_lowercase().contains("36cb") && dbg.contains("redacted"));
    assert_eq!(
        format!("{:?}", clear_password_response(PW)),
        "SecretBytes([redacted])"
    );
    assert_eq!(clear_password_response(PW).expose(), b"s3cret-pw\0");
}
