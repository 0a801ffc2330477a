//! Engine failures come back as `Error::Engine` with the engine's family.

use query::{Error, ErrorKind};

use crate::fixture::Fixture;

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_segment_file_is_an_engine_error() {
    let fixture = Fixture::new();
    let segments = fixture.engine.segments();
    std::fs::remove_file(fixture.engine.data_dir().join(&segments[0].path)).unwrap();
    match fixture.sql.execute("SELECT count(*) FROM spans").await {
        Err(error @ Error::Engine(_)) => {
            let Error::Engine(inner) = &error else {
                unreachable!()
            };
            assert!(matches!(**inner, engine::Error::Io { .. }), "{inner:?}");
            assert_eq!(error.kind(), ErrorKind::Transient);
        }
        other => panic!("expected an engine error, got {other:?}"),
    }
}
