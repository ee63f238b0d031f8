//! sumun-vault
