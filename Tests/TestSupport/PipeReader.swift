import EventLogWire
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Reads the read end of a child's output pipe until its end, with blocking `read(2)` on a thread of its own,
/// handing each chunk to `onChunk` and keeping all of it for ``wait()``.
///
/// Not `FileHandle.readabilityHandler`: on Linux that installs a libdispatch read source, and tearing such
/// sources down while others are set up corrupts libdispatch's epoll bookkeeping, so its manager thread
/// crashes in `_dispatch_event_loop_drain` (swiftlang/swift-corelibs-libdispatch#949,
/// swift-corelibs-foundation#3276). It crashed the test command once. A blocking read registers nothing
/// with libdispatch; the end of the output ends the thread.
public final class PipeReader: Sendable {
    private let collected = Locked(Data())
    private let done = DispatchSemaphore(value: 0)

    /// Starts reading `handle` (a pipe's `fileHandleForReading`, kept open until the pipe ends).
    public init(_ handle: FileHandle, onChunk: @escaping @Sendable (Data) -> Void = { _ in }) {
        let thread = Thread { [collected, done] in
            // The closure holds `handle`, so its descriptor is not closed (and reused) while it is read.
            let descriptor = handle.fileDescriptor
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { break }
                let chunk = Data(buffer[0..<count])
                collected.withLock { $0.append(chunk) }
                onChunk(chunk)
            }
            done.signal()
        }
        thread.name = "PipeReader"
        thread.start()
    }

    /// Waits until the pipe ends (every writer has closed it) and returns all it carried.
    public func wait() -> Data {
        done.wait()
        done.signal()
        return collected.withLock { $0 }
    }
}
