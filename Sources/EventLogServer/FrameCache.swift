import EventLog
import NIOCore
import Synchronization

/// The SSE frames of recent events, encoded once and shared by every subscriber that sends them.
///
/// Live subscribers all send the same newest events; without the cache each of them would encode
/// each event again. Only events near the newest one seen are kept (`capacity` ids back), so a
/// replay of old history passes through without evicting the live tail.
final class FrameCache: Sendable {
    private struct Key: Hashable {
        let id: Int64
        let envelope: Bool
    }

    private struct State {
        var frames: [Key: ByteBuffer] = [:]
        var newest: Int64 = 0
    }

    private let state = Mutex(State())
    private let capacity: Int64

    init(capacity: Int = 8192) {
        self.capacity = Int64(capacity)
    }

    /// Appends the frames of `events` to `buffer`, encoding only those not cached yet.
    func write(_ events: [Event], envelope: Bool, into buffer: inout ByteBuffer) {
        for event in events {
            let key = Key(id: event.id, envelope: envelope)
            if var cached = state.withLock({ $0.frames[key] }) {
                buffer.writeBuffer(&cached)
                continue
            }
            var frame = ByteBuffer()
            frame.writeSSEEvent(event, envelope: envelope)
            buffer.writeImmutableBuffer(frame)
            store(frame, for: key)
        }
    }

    private func store(_ frame: ByteBuffer, for key: Key) {
        state.withLock { state in
            if key.id > state.newest { state.newest = key.id }
            let oldest = state.newest - capacity
            guard key.id > oldest else { return }
            state.frames[key] = frame
            if state.frames.count > Int(capacity) * 2 {
                // Keep the newest half of the window; ids only grow, so this is amortised O(1) per insert.
                let keepAbove = state.newest - capacity / 2
                state.frames = state.frames.filter { $0.key.id > keepAbove }
            }
        }
    }
}
