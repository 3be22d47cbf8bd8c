//! The wire format against bytes worked out by hand from the protobuf encoding
//! rules (a field's key is `number << 3 | wire type`; 0 varint, 2 length-
//! delimited; a map entry is a message of key = 1, value = 2; proto3 leaves
//! zero values out), so a wrong field number or type fails here, not against a
//! runtime.

use std::collections::HashMap;

use prost::Message;

use super::*;

/// `message` encodes to `bytes`, and `bytes` decode back to `message`.
fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(message: &M, bytes: &[u8]) {
    assert_eq!(message.encode_to_vec(), bytes, "encoding {message:?}");
    assert_eq!(&M::decode(bytes).unwrap(), message, "decoding {bytes:02x?}");
}

fn map(key: &str, value: &str) -> HashMap<String, String> {
    HashMap::from([(key.to_owned(), value.to_owned())])
}

#[test]
fn a_verbose_status_request() {
    let request = PodSandboxStatusRequest {
        pod_sandbox_id: "abc".into(),
        verbose: true,
    };
    #[rustfmt::skip]
    let bytes = [
        0x0a, 3, b'a', b'b', b'c', // 1 pod_sandbox_id
        0x10, 1,                   // 2 verbose
    ];
    round_trip(&request, &bytes);
}

#[test]
fn a_list_of_ready_sandboxes_is_asked_with_an_empty_state_value() {
    let request = ListPodSandboxRequest {
        filter: Some(PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxReady.into(),
            }),
        }),
    };
    // 1 filter { 2 state { SANDBOX_READY is 0, so nothing } }
    round_trip(&request, &[0x0a, 2, 0x12, 0]);
    let not_ready = ListPodSandboxRequest {
        filter: Some(PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxNotready.into(),
            }),
        }),
    };
    round_trip(&not_ready, &[0x0a, 4, 0x12, 2, 0x08, 1]);
}

#[test]
fn a_listed_sandbox_with_its_metadata_and_annotations() {
    let response = ListPodSandboxResponse {
        items: vec![PodSandbox {
            id: "s1".into(),
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                uid: "u".into(),
                namespace: "ns".into(),
                attempt: 1,
            }),
            annotations: map("k", "v"),
        }],
    };
    #[rustfmt::skip]
    let bytes = [
        0x0a, 28,                           // 1 items[0]
          0x0a, 2, b's', b'1',              //   1 id
          0x12, 14,                         //   2 metadata
            0x0a, 3, b'w', b'e', b'b',      //     1 name
            0x12, 1, b'u',                  //     2 uid
            0x1a, 2, b'n', b's',            //     3 namespace
            0x20, 1,                        //     4 attempt
          0x32, 6,                          //   6 annotations entry
            0x0a, 1, b'k', 0x12, 1, b'v',   //     key, value
    ];
    round_trip(&response, &bytes);
}

#[test]
fn a_verbose_status_gives_ips_host_network_and_info_and_skips_unknown_fields() {
    #[rustfmt::skip]
    let bytes = [
        0x0a, 31,                                    // 1 status
          0x2a, 21,                                  //   5 network
            0x0a, 8, b'1', b'0', b'.', b'0', b'.', b'0', b'.', b'5', // 1 ip
            0x12, 9, 0x0a, 7, b'f', b'd', b'0', b'0', b':', b':', b'5', // 2 additional_ips[0].ip
          0x32, 6,                                   //   6 linux
            0x0a, 4, 0x12, 2, 0x08, 2,               //     1 namespaces { 2 options { 1 network NODE } }
        0x12, 10,                                    // 2 info entry
          0x0a, 4, b'i', b'n', b'f', b'o', 0x12, 2, b'{', b'}',
        0x20, 5,                                     // 4 timestamp: not declared, skipped
    ];
    let response = PodSandboxStatusResponse::decode(&bytes[..]).unwrap();
    let status = response.status.as_ref().unwrap();
    assert_eq!(status.ips(), ["10.0.0.5", "fd00::5"]);
    assert!(status.host_network());
    assert_eq!(response.info, map("info", "{}"));
    // Encoded again, everything but the undeclared field.
    assert_eq!(response.encode_to_vec(), bytes[..bytes.len() - 2]);
    assert!(!PodSandboxStatus::default().host_network());
    assert!(PodSandboxStatus::default().ips().is_empty());
}

#[test]
fn a_version_answer_keeps_the_runtime_name_and_version() {
    #[rustfmt::skip]
    let bytes = [
        0x0a, 2, b'v', b'1',                          // 1 version: not declared
        0x12, 10, b'c', b'o', b'n', b't', b'a', b'i', b'n', b'e', b'r', b'd', // 2 runtime_name
        0x1a, 5, b'1', b'.', b'6', b'.', b'0',        // 3 runtime_version
        0x22, 2, b'v', b'1',                          // 4 runtime_api_version: not declared
    ];
    let version = VersionResponse::decode(&bytes[..]).unwrap();
    assert_eq!(
        (
            version.runtime_name.as_str(),
            version.runtime_version.as_str()
        ),
        ("containerd", "1.6.0")
    );
}

#[test]
fn a_sandbox_to_run_with_the_nodes_network() {
    let request = RunPodSandboxRequest {
        config: Some(PodSandboxConfig {
            hostname: "h".into(),
            annotations: map("a", "b"),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: "/p".into(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node.into(),
                        pid: NamespaceMode::Container.into(),
                        ipc: NamespaceMode::Pod.into(),
                    }),
                }),
                sysctls: HashMap::new(),
            }),
            ..PodSandboxConfig::default()
        }),
    };
    #[rustfmt::skip]
    let bytes = [
        0x0a, 25,                               // 1 config
          0x12, 1, b'h',                        //   2 hostname
          0x3a, 6, 0x0a, 1, b'a', 0x12, 1, b'b', //  7 annotations entry
          0x42, 12,                             //   8 linux
            0x0a, 2, b'/', b'p',                //     1 cgroup_parent
            0x12, 6,                            //     2 security_context
              0x0a, 4,                          //       1 namespace_options
                0x08, 2, 0x10, 1,               //         1 network NODE, 2 pid CONTAINER (ipc POD is 0)
    ];
    round_trip(&request, &bytes);
    round_trip(
        &StopPodSandboxRequest {
            pod_sandbox_id: "s1".into(),
        },
        &[0x0a, 2, b's', b'1'],
    );
    round_trip(
        &RemovePodSandboxRequest {
            pod_sandbox_id: "s1".into(),
        },
        &[0x0a, 2, b's', b'1'],
    );
    round_trip(
        &RunPodSandboxResponse {
            pod_sandbox_id: "s1".into(),
        },
        &[0x0a, 2, b's', b'1'],
    );
}
