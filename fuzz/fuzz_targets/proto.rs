//! The socket protocol: Header::decode/check/parse and every payload
//! decoder on any bytes (whole and as a prefix), never panicking; whatever
//! decodes re-encodes to exactly the bytes it came from, and check()
//! agrees with its definition.
#![no_main]

use hactl::proto::{
    Cmd, EventCb, HEADER_SIZE, Header, ProtoError, SANLK_MAX_DISKS, SANLK_STATE_MAXSTR, SM_MAGIC,
    SM_PROTO, SanlkDisk, SanlkHost, SanlkHostEvent, SanlkLockspace, SanlkOptions, SanlkPath,
    SanlkRentry, SanlkResource, SanlkRindex, SanlkState, WireStruct,
};
use libfuzzer_sys::fuzz_target;

fn fixed<T: WireStruct + PartialEq + std::fmt::Debug>(data: &[u8]) -> Option<T> {
    match T::decode(data) {
        Ok(v) => {
            assert_eq!(data.len(), T::SIZE);
            assert_eq!(v.encode(), data, "{}: encode(decode(b)) != b", T::WHAT);
            assert_eq!(T::decode(&v.encode()).unwrap(), v);
            Some(v)
        }
        Err(e) => {
            if data.len() < T::SIZE {
                assert!(e.is_incomplete(), "{}: {e}", T::WHAT);
            } else if data.len() > T::SIZE {
                assert!(
                    matches!(e, ProtoError::WrongLength { .. }),
                    "{}: {e}",
                    T::WHAT
                );
                // The exact-size prefix always decodes.
                let v = T::decode(&data[..T::SIZE]).expect("exact size decodes");
                assert_eq!(v.encode(), &data[..T::SIZE]);
            } else {
                panic!("{}: exact size refused: {e}", T::WHAT);
            }
            let _ = e.to_string();
            None
        }
    }
}

fn path(p: &SanlkPath) {
    match p.as_bytes() {
        Ok(b) => {
            assert!(!b.contains(&0));
            assert_eq!(SanlkPath::from_bytes(b).unwrap().as_bytes().unwrap(), b);
        }
        Err(e) => {
            assert_eq!(e, ProtoError::PathNotTerminated);
            assert!(!p.0.contains(&0));
        }
    }
    let _ = (p.to_string_lossy(), format!("{p:?}"), p.is_empty());
}

fuzz_target!(|data: &[u8]| {
    // Header: decode needs 32 bytes and reads only those.
    match Header::decode(data) {
        Ok(h) => {
            assert!(data.len() >= HEADER_SIZE);
            assert_eq!(&h.encode()[..], &data[..HEADER_SIZE]);
            let expect = if h.magic != SM_MAGIC {
                Err(ProtoError::BadMagic(h.magic))
            } else if h.version != 0
                && h.cmd != Cmd::Version as u32
                && (h.version & 0xFFFF_0000) > (SM_PROTO & 0xFFFF_0000)
            {
                Err(ProtoError::UnsupportedVersion { version: h.version })
            } else if Cmd::from_u32(h.cmd).is_none() {
                Err(ProtoError::UnknownCmd(h.cmd))
            } else {
                Ok(())
            };
            assert_eq!(Header::check(data), expect);
            match Header::parse(data) {
                Ok((p, cmd)) => {
                    assert_eq!(p, h);
                    assert_eq!(cmd as u32, h.cmd);
                    assert_eq!(Cmd::from_name(cmd.name()), Some(cmd));
                }
                Err(e) => assert_eq!(Err(e), expect),
            }
            let r = h.result_reply(h.data as i32);
            assert_eq!(
                (r.magic, r.cmd, r.seq, r.length),
                (h.magic, h.cmd, h.seq, 32)
            );
            assert_eq!(r.result(), h.data as i32);
        }
        Err(e) => {
            assert!(data.len() < HEADER_SIZE);
            assert!(e.is_incomplete());
            assert!(Header::check(data).unwrap_err().is_incomplete());
        }
    }

    if let Some(d) = fixed::<SanlkDisk>(data) {
        path(&d.path);
    }
    if let Some(ls) = fixed::<SanlkLockspace>(data) {
        path(&ls.host_id_disk.path);
        let _ = (ls.name.to_string_lossy(), format!("{ls:?}"));
    }
    fixed::<SanlkOptions>(data);
    if let Some(h) = fixed::<SanlkHost>(data) {
        let _ = h.state_name();
    }
    fixed::<SanlkHostEvent>(data);
    if let Some(x) = fixed::<SanlkRindex>(data) {
        path(&x.disk.path);
    }
    fixed::<SanlkRentry>(data);
    fixed::<EventCb>(data);

    // Resource: 128 bytes, then num_disks (≤ 4) disks, exactly.
    match SanlkResource::decode(data) {
        Ok(r) => {
            assert!(r.disks.len() <= SANLK_MAX_DISKS);
            assert_eq!(r.encoded_len(), data.len());
            assert_eq!(r.encode(), data);
            assert_eq!(SanlkResource::decode(&r.encode()).unwrap(), r);
            for d in &r.disks {
                path(&d.path);
            }
        }
        Err(e) => {
            let _ = e.to_string();
            if let Ok(n) = SanlkResource::num_disks_in(data) {
                assert_ne!(data.len(), SanlkResource::HEAD_SIZE + n * SanlkDisk::SIZE);
            }
        }
    }

    // State: 80 bytes, then str_len (≤ 4096) bytes, exactly.
    match SanlkState::decode(data) {
        Ok(st) => {
            assert!(st.str_len() <= SANLK_STATE_MAXSTR);
            assert_eq!(data.len(), SanlkState::HEAD_SIZE + st.str_len());
            assert_eq!(st.encode(), data);
            let _ = (st.text_str(), st.fields());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if data.len() >= SanlkState::HEAD_SIZE {
        match SanlkState::decode_head(&data[..SanlkState::HEAD_SIZE]) {
            Ok((st, len)) => {
                assert!(len <= SANLK_STATE_MAXSTR);
                assert!(st.text.is_empty());
            }
            Err(e) => assert!(
                matches!(e, ProtoError::StateStrTooLong(n) if n as usize > SANLK_STATE_MAXSTR)
            ),
        }
    }

    let _ = SanlkPath::from_bytes(data).map(|p| path(&p));
});
