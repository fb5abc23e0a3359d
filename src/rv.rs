//! sanlock's result numbers (`sanlock_rv.h`), returned by the daemon and
//! printed by the CLI as `... done <rv>`.

pub const SANLK_OK: i32 = 1;
pub const SANLK_ERROR: i32 = -201;
pub const SANLK_AIO_TIMEOUT: i32 = -202;
pub const SANLK_WD_ERROR: i32 = -203;
pub const SANLK_DBLOCK_READ: i32 = -210;
pub const SANLK_DBLOCK_WRITE: i32 = -211;
pub const SANLK_DBLOCK_LVER: i32 = -212;
pub const SANLK_DBLOCK_MBAL: i32 = -213;
pub const SANLK_DBLOCK_CHECKSUM: i32 = -214;
pub const SANLK_LEADER_READ: i32 = -220;
pub const SANLK_LEADER_WRITE: i32 = -221;
pub const SANLK_LEADER_DIFF: i32 = -222;
pub const SANLK_LEADER_MAGIC: i32 = -223;
pub const SANLK_LEADER_VERSION: i32 = -224;
pub const SANLK_LEADER_SECTORSIZE: i32 = -225;
pub const SANLK_LEADER_LOCKSPACE: i32 = -226;
pub const SANLK_LEADER_RESOURCE: i32 = -227;
pub const SANLK_LEADER_NUMHOSTS: i32 = -228;
pub const SANLK_LEADER_CHECKSUM: i32 = -229;
pub const SANLK_ADDLS_SIZES: i32 = -230;
pub const SANLK_ADDLS_INVALID_HOSTID: i32 = -231;
pub const SANLK_ACQUIRE_LVER: i32 = -240;
pub const SANLK_ACQUIRE_LOCKSPACE: i32 = -241;
pub const SANLK_ACQUIRE_IDDISK: i32 = -242;
pub const SANLK_ACQUIRE_IDLIVE: i32 = -243;
pub const SANLK_ACQUIRE_OWNED: i32 = -244;
pub const SANLK_ACQUIRE_OTHER: i32 = -245;
pub const SANLK_ACQUIRE_SHRETRY: i32 = -246;
pub const SANLK_ACQUIRE_OWNED_RETRY: i32 = -247;
pub const SANLK_RELEASE_LVER: i32 = -250;
pub const SANLK_RELEASE_OWNER: i32 = -251;
pub const SANLK_RENEW_OWNER: i32 = -260;
pub const SANLK_RENEW_DIFF: i32 = -261;
pub const SANLK_HOSTID_BUSY: i32 = -262;
pub const SANLK_REQUEST_MAGIC: i32 = -270;
pub const SANLK_REQUEST_VERSION: i32 = -271;
pub const SANLK_REQUEST_OLD: i32 = -272;
pub const SANLK_REQUEST_LVER: i32 = -273;
pub const SANLK_RINDEX_MAGIC: i32 = -274;
pub const SANLK_RINDEX_VERSION: i32 = -275;
pub const SANLK_RINDEX_LOCKSPACE: i32 = -276;
pub const SANLK_RINDEX_OFFSET: i32 = -277;
pub const SANLK_RINDEX_DIFF: i32 = -278;

/// What a result number means, for messages (hactl's wording).
pub fn describe(rv: i32) -> String {
    let s = match rv {
        SANLK_ERROR => "general error",
        SANLK_AIO_TIMEOUT => "an I/O did not complete within io_timeout",
        SANLK_WD_ERROR => "no watchdog is available (wdmd)",
        SANLK_DBLOCK_READ => "could not read a majority of the lease's dblocks",
        SANLK_DBLOCK_WRITE => "could not write our dblock",
        SANLK_DBLOCK_MBAL => "another host ran a newer ballot for this lease",
        SANLK_DBLOCK_LVER => "another host committed a newer lease version during our ballot",
        SANLK_DBLOCK_CHECKSUM => "a dblock of the lease has a bad checksum",
        SANLK_LEADER_READ => "could not read the lease's leader",
        SANLK_LEADER_WRITE => "could not write the lease's leader",
        SANLK_LEADER_DIFF => "the lease's leaders disagree",
        SANLK_LEADER_MAGIC => "there is no lease at this offset",
        SANLK_LEADER_VERSION => "the lease's on-disk format version is unknown",
        SANLK_LEADER_SECTORSIZE => "the lease's sector size is inconsistent",
        SANLK_LEADER_LOCKSPACE => "the lease belongs to another lockspace",
        SANLK_LEADER_RESOURCE => "the lease belongs to another resource",
        SANLK_LEADER_NUMHOSTS => "the lease's num_hosts is too small for this host_id",
        SANLK_LEADER_CHECKSUM => "the lease's leader has a bad checksum",
        SANLK_ADDLS_SIZES => "the lockspace's sector and align sizes are not a valid pair",
        SANLK_ADDLS_INVALID_HOSTID => "the host_id is larger than the lockspace allows",
        SANLK_ACQUIRE_LVER => "the lease is not at the version asked for",
        SANLK_ACQUIRE_LOCKSPACE => {
            "another host owns the lease and no joined lockspace can tell whether it is alive"
        }
        SANLK_ACQUIRE_IDDISK => "the lockspace disk cannot be opened",
        SANLK_ACQUIRE_IDLIVE => "the lease is held by a host that is alive",
        SANLK_ACQUIRE_OWNED => "another host won the ballot for this lease version",
        SANLK_ACQUIRE_OTHER => "our ballot committed another host as owner",
        SANLK_ACQUIRE_SHRETRY => "the lease is held exclusively; shared acquire can retry",
        SANLK_ACQUIRE_OWNED_RETRY => "the lease is owned by another host (no wait asked)",
        SANLK_RELEASE_LVER => "the lease changed version since we acquired it",
        SANLK_RELEASE_OWNER => "we are not the lease's owner any more",
        SANLK_RENEW_OWNER => "our delta lease was taken by another host",
        SANLK_RENEW_DIFF => "our delta lease changed behind our back",
        SANLK_HOSTID_BUSY => "the host_id is in use by a live host",
        SANLK_RINDEX_MAGIC => "there is no resource index at this offset",
        SANLK_RINDEX_VERSION => "the resource index format version is unknown",
        SANLK_RINDEX_LOCKSPACE => "the resource index belongs to another lockspace",
        SANLK_RINDEX_OFFSET => "the offset is not a resource slot of this index",
        SANLK_RINDEX_DIFF => "the index records another name at this offset",
        e if e < 0 && e > -4096 => return std::io::Error::from_raw_os_error(-e).to_string(),
        _ => "unknown result",
    };
    s.to_string()
}
