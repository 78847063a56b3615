//! Turning the client's errors into chatstream's.

use chatstream_core::Error;

/// A database error as chatstream's error: a connection, I/O or pool failure is
/// [`Error::Unavailable`] (retryable), a refused statement [`Error::Invalid`].
pub(crate) fn from_pg(e: tokio_postgres::Error) -> Error {
    // A statement the server refused for its content (a constraint, a bad value) says so
    // with an SQLSTATE outside the connection classes (08, 53, 57, 58).
    match e.code().map(|c| c.code().to_owned()) {
        Some(code) if !is_server_trouble(&code) => Error::invalid("database statement", e),
        _ => Error::unavailable("postgres", e),
    }
}

/// A pool error (no connection could be made or recycled).
pub(crate) fn from_pool(e: deadpool_postgres::PoolError) -> Error {
    Error::unavailable("postgres", e)
}

/// SQLSTATE classes meaning the server or connection is in trouble, not the statement:
/// 08 connection exception, 40 transaction rollback (serialization, deadlock), 53
/// insufficient resources, 57 operator intervention (shutdown), 58 system error.
fn is_server_trouble(code: &str) -> bool {
    ["08", "40", "53", "57", "58"]
        .iter()
        .any(|class| code.starts_with(class))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_and_connection_codes_are_trouble() {
        assert!(is_server_trouble("57P01"));
        assert!(is_server_trouble("08006"));
        assert!(is_server_trouble("40001"));
        assert!(!is_server_trouble("23505"));
        assert!(!is_server_trouble("22021"));
    }
}
