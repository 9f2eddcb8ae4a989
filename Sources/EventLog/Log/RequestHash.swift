extension NewEvent {
    /// A 64-bit FNV-1a hash of everything that makes up the request, to tell an idempotent retry
    /// (same hash) from a conflicting reuse of the key (different hash).
    var requestHash: Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ byte: UInt8) {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        func mix(_ text: String?) {
            guard let text else {
                mix(0x01)
                return
            }
            mix(0x02)
            for byte in text.utf8 { mix(byte) }
            mix(0x00)
        }
        mix(topic)
        mix(type)
        mix(key)
        switch data {
        case .none: mix(0x03)
        case .text(let text):
            mix(0x04)
            mix(text)
        case .json(let text):
            mix(0x05)
            mix(text)
        }
        return Int64(bitPattern: hash)
    }
}
