//! Response projection (being written).
