//! Property tests of OTLP log records: OTLP -> log rows -> engine (sealed, reopened) -> OTLP,
//! exactly; OTLP/JSON both ways; spans and log rows never read as each other.

use engine::{Engine, NoTierRules, Options, RowFamily, ScanRequest};
use ingest::{
    ContentPolicy, decode_logs_json, decode_logs_protobuf, encode_logs_json, prepare_logs,
    rows_to_logs,
};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use proptest::prelude::*;
use prost::Message;

use crate::strategies::{logs_request, record_multiset};

/// No redaction, capture on: the records are stored as sent (the generated keys are no content
/// keys).
fn policy() -> ContentPolicy {
    ContentPolicy::new(true, &[], [7; 32]).unwrap()
}

fn records(request: &ExportLogsServiceRequest) -> usize {
    request
        .resource_logs
        .iter()
        .flat_map(|resource| &resource.scope_logs)
        .map(|scope| scope.log_records.len())
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_log_field_survives_the_engine(request in logs_request()) {
        let dir = tempfile::tempdir().unwrap();
        let options = || Options::default().with_background_sealing(false);
        let write = prepare_logs(request.clone(), &policy(), &NoTierRules).unwrap();
        prop_assert_eq!(write.spans.num_rows(), records(&request));
        {
            let engine = Engine::open(dir.path(), options()).unwrap();
            engine.write_batch(write).unwrap();
            // Read from the memtable, then from a sealed segment after a reopen.
            let logs = engine
                .scan(&ScanRequest { family: RowFamily::Logs, ..ScanRequest::default() })
                .unwrap();
            prop_assert_eq!(
                record_multiset(&rows_to_logs(&logs).unwrap()),
                record_multiset(&request)
            );
            engine.seal().unwrap();
            engine.close().unwrap();
        }
        let engine = Engine::open(dir.path(), options()).unwrap();
        let logs = engine
            .scan(&ScanRequest { family: RowFamily::Logs, ..ScanRequest::default() })
            .unwrap();
        let spans = engine.scan(&ScanRequest::default()).unwrap();
        engine.close().unwrap();
        prop_assert_eq!(
            record_multiset(&rows_to_logs(&logs).unwrap()),
            record_multiset(&request)
        );
        // Log rows are never spans.
        prop_assert_eq!(spans.iter().map(|batch| batch.num_rows()).sum::<usize>(), 0);
    }

    #[test]
    fn otlp_json_and_protobuf_logs_round_trip_exactly(request in logs_request()) {
        let body = serde_json::to_vec(&encode_logs_json(&request)).unwrap();
        let back = decode_logs_json(&body).unwrap();
        prop_assert_eq!(back.encode_to_vec(), request.encode_to_vec());
        // Compare encodings: NaN equals itself there.
        let back = decode_logs_protobuf(&request.encode_to_vec()).unwrap();
        prop_assert_eq!(back.encode_to_vec(), request.encode_to_vec());
    }
}
