//! sumun-policy
