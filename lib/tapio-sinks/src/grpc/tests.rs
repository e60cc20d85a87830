//! Option checking; the delivery itself is tested end to end against real `tapio` processes
//! in tests/grpc.rs.

use tapio_event::{BuildContext, ComponentConfig};

use super::GrpcSinkConfig;

#[test]
fn bad_options_are_named() {
    let cx = BuildContext {
        name: "out".into(),
        data_dir: std::env::temp_dir(),
        node_name: "test".into(),
    };
    let build = |text: &str| {
        let config: GrpcSinkConfig = toml::from_str(text).unwrap();
        config.build(&cx).err().map(|e| e.to_string())
    };
    assert!(build("endpoints = []").unwrap().contains("`endpoints`"));
    assert!(
        build("endpoints = [\"tcp://x:1\"]")
            .unwrap()
            .contains("http://host:port")
    );
    assert!(
        build("endpoints = [\"http://x:1\"]\ntls.ca_file = \"/nonexistent\"")
            .unwrap()
            .contains("tls.ca_file")
    );
    assert!(
        build("endpoints = [\"http://x:1\"]\nmax_in_flight = 0")
            .unwrap()
            .contains("max_in_flight")
    );
    assert!(
        build("endpoints = [\"http://127.0.0.1:1\", \"https://x:2\"]\ncompression = \"gzip\"")
            .is_none()
    );
}
