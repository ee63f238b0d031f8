//! The vault: an envelope-encrypted secret store for backend credentials, user password
//! verifiers and token signing keys; key rotation; backend password rotation; and the
//! short-lived tokens clients use as passwords.
//!
//! The gateway uses it read-only: [`Vault::open`] a directory, [`Vault::get`] a backend
//! credential, build one [`TokenVerifier`] with [`Vault::token_verifier`], and call
//! [`Vault::reload`] when [`Vault::has_changed`]. Writers (the CLI) use the same type; every
//! write is locked and atomic. No function here prints or logs, and no error message contains
//! a secret value or a token.

pub mod crypto;
pub mod master;
pub mod mysql;
pub mod rotation;
pub mod scram;
pub mod secret;
pub mod store;
pub mod token;

pub use master::{KdfParams, LocalMasterKey, MasterKey, MasterKeyError, MasterKeySource};
pub use rotation::{rotate, Backend, BackendError, RotationError, RotationReport, Step};
pub use scram::{PasswordVerifiers, ScramVerifier};
pub use secret::SecretBytes;
pub use store::{
    ErrorKind, KeyRotation, SecretInfo, SecretKind, SecretMeta, Stage, StoreError, Vault,
};
pub use token::{Claims, TokenError, TokenSigner, TokenVerifier, VerifyPolicy};
