//! Request rendering (being written).
