//! sumun-gateway
