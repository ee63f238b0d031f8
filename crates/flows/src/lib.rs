//! sumun-flows
