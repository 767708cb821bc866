//! SipHash-2-4 (Aumasson and Bernstein, 2012), 64-bit output, implemented here so that the
//! Maglev permutations depend on nothing but this file: the standard library's hasher is
//! unspecified and may change between Rust releases, and every node must compute the same
//! tables. Checked against the reference implementation's test vectors below.

/// SipHash-2-4 of `data` under the 128-bit `key` (two little-endian 64-bit words).
pub(crate) fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let k0 = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(key[8..].try_into().expect("8 bytes"));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];

    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let m = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    // The last block: the remaining bytes, little-endian, with the length's low byte on top.
    let mut last = (data.len() as u64 & 0xff) << 56;
    for (i, byte) in chunks.remainder().iter().enumerate() {
        last |= u64::from(*byte) << (8 * i);
    }
    v[3] ^= last;
    round(&mut v);
    round(&mut v);
    v[0] ^= last;

    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference implementation's vectors (`vectors.h`, key 00..0f, message 00..(n-1)),
    /// as little-endian u64s, for lengths covering an empty message, partial and whole blocks.
    #[test]
    fn matches_the_reference_vectors() {
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let message: Vec<u8> = (0..64u8).collect();
        let expected: [(usize, u64); 6] = [
            (0, 0x726f_db47_dd0e_0e31),
            (1, 0x74f8_39c5_93dc_67fd),
            (7, 0xab02_00f5_8b01_d137),
            (8, 0x93f5_f579_9a93_2462),
            (15, 0xa129_ca61_49be_45e5),
            (63, 0x958a_324c_eb06_4572),
        ];
        for (len, want) in expected {
            assert_eq!(siphash24(&key, &message[..len]), want, "length {len}");
        }
    }

    /// The standard library's (deprecated, but still SipHash-2-4 over the bytes written) hasher
    /// as a second, independent reference for every length up to four blocks.
    #[test]
    #[allow(deprecated)]
    fn matches_the_standard_library_sip_hasher() {
        use std::hash::{Hasher, SipHasher};
        let key: [u8; 16] = *b"atoll-maglev-off";
        let k0 = u64::from_le_bytes(key[..8].try_into().unwrap());
        let k1 = u64::from_le_bytes(key[8..].try_into().unwrap());
        let data: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        for len in 0..=data.len() {
            let mut reference = SipHasher::new_with_keys(k0, k1);
            reference.write(&data[..len]);
            assert_eq!(siphash24(&key, &data[..len]), reference.finish(), "length {len}");
        }
    }
}
