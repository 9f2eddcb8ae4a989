import EventLog
import NIOCore
import Synchronization

/// The encoded frames of recent events, encoded once and shared by every subscriber that sends them: the SSE
/// frame (plain or enveloped) and the WebSocket `event` message with its resume token.
///
/// Live subscribers all send the same newest events; without the cache each of them would encode each event
/// (and sign its resume token) again. A subscriber writes the cached buffer itself, so the bytes in its
/// channel's queue are shared, not copied. Only events near the log's head are kept (`capacity` ids back), so a
/// replay of old history passes through without evicting the live tail.
final class FrameCache: Sendable {
    /// Which encoding of an event.
    enum Kind: UInt8, Sendable {
        case sse
        case sseEnvelope
        case webSocket
    }

    private struct Key: Hashable {
        let id: Int64
        let kind: Kind
    }

    private let frames = Mutex<[Key: ByteBuffer]>([:])
    /// The log's head as last told (``advance(to:)``), or the newest id stored if that is higher; readable
    /// without the lock (``mayHold(_:)``).
    private let newest: Atomic<Int64>
    private let capacity: Int64
    private let tokens: ResumeTokenCodec

    /// A cache for a log whose head is `head` now; tell it of later commits with ``advance(to:)``.
    init(tokens: ResumeTokenCodec, head: Int64, capacity: Int = 8192) {
        self.tokens = tokens
        self.capacity = Int64(capacity)
        self.newest = Atomic(head)
    }

    /// The log's head moved to `head` (a commit).
    func advance(to head: Int64) {
        newest.max(head, ordering: .relaxed)
    }

    /// Whether the frame of event `id` may be cached: false for an event older than the window, whose frame
    /// a replay had better encode straight into its own write than look up, encode and not keep.
    func mayHold(_ id: Int64) -> Bool {
        id > newest.load(ordering: .relaxed) - capacity
    }

    /// The frame of `event` in `kind`, encoded now if it is not cached yet.
    func frame(_ event: Event, _ kind: Kind) -> ByteBuffer {
        let key = Key(id: event.id, kind: kind)
        if let cached = frames.withLock({ $0[key] }) { return cached }
        var frame = ByteBuffer()
        switch kind {
        case .sse: frame.writeSSEEvent(event, envelope: false)
        case .sseEnvelope: frame.writeSSEEvent(event, envelope: true)
        case .webSocket:
            frame.writeString(
                ServerMessage.event(event, resumeToken: tokens.encode(position: event.id)).webSocketText ?? "")
        }
        store(frame, for: key)
        return frame
    }

    private func store(_ frame: ByteBuffer, for key: Key) {
        let newest = self.newest.max(key.id, ordering: .relaxed).newValue
        guard key.id > newest - capacity else { return }
        frames.withLock { frames in
            frames[key] = frame
            if frames.count > Int(capacity) * 3 {
                // Keep the newest half of the window; ids only grow, so this is amortised O(1) per insert.
                let keepAbove = newest - capacity / 2
                frames = frames.filter { $0.key.id > keepAbove }
            }
        }
    }
}
