import CSQLite
import Foundation

/// Runs WAL checkpoints on a thread of its own, so the writer never stops to copy pages and fsync the
/// database file between two group commits.
///
/// The writer's automatic checkpoint is turned off (`PRAGMA wal_autocheckpoint=0`) and its WAL hook
/// (https://sqlite.org/c3ref/wal_hook.html) signals this thread once the WAL holds more than `threshold`
/// frames. The thread then runs a PASSIVE checkpoint on its own connection: it copies what no reader
/// still needs and never blocks the writer or the readers (https://sqlite.org/c3ref/wal_checkpoint_v2.html).
/// When a checkpoint has copied everything, the writer's next transaction starts the WAL over from the
/// beginning, so the file stays bounded. Durability is unchanged: commits are durable in the WAL.
final class Checkpointer: @unchecked Sendable {
    // @unchecked: `pendingFrames` and `stopping` are only touched under `condition`.
    private let condition = NSCondition()
    private var pendingFrames: Int32 = 0
    private var stopping = false
    private let threshold: Int32
    private let exited = DispatchGroup()

    /// Starts the thread with its own connection to `path`.
    init(path: String, threshold: Int32 = 1000, busyTimeoutMilliseconds: Int32) throws {
        self.threshold = threshold
        let opened = Locked<Result<Void, Error>?>(nil)
        let ready = DispatchSemaphore(value: 0)
        exited.enter()
        let thread = Thread { [self] in
            // The connection is made and used on this thread only.
            let connection: Connection
            do {
                connection = try Connection(
                    path: path, mode: .readWrite, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
                opened.withLock { $0 = .success(()) }
                ready.signal()
            } catch {
                opened.withLock { $0 = .failure(error) }
                ready.signal()
                self.exited.leave()
                return
            }
            self.loop(connection)
            connection.close()
            self.exited.leave()
        }
        thread.name = "eventlog-checkpointer"
        thread.start()
        ready.wait()
        try opened.withLock { $0 }?.get()
    }

    /// Installs the WAL hook on the writer's connection. Call on the writer's thread.
    func attach(to writer: Connection) throws {
        try writer.execute("PRAGMA wal_autocheckpoint=0")
        sqlite3_wal_hook(
            writer.handle,
            { context, db, name, frames in
                guard let context else { return SQLITE_OK }
                let checkpointer = Unmanaged<Checkpointer>.fromOpaque(context).takeUnretainedValue()
                checkpointer.walGrew(to: frames)
                if frames >= checkpointer.finishThreshold {
                    // See `finishThreshold`: on the writer's thread, between two of its transactions.
                    _ = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
                }
                return SQLITE_OK
            },
            Unmanaged.passUnretained(self).toOpaque()
        )
    }

    /// The WAL size (in frames) at which the writer finishes a checkpoint itself.
    ///
    /// The WAL starts over from its beginning only at a write transaction that finds every frame copied. This
    /// thread's checkpoint copies the frames that were there when it began, while the writer keeps appending:
    /// under steady publishing it never catches up, and the WAL grew by about 60 MB a second (733 MB after a
    /// 10-second publish benchmark). So once the WAL is this large, the writer runs a PASSIVE checkpoint on
    /// its own connection right after a commit: this thread has already copied most frames, the rest is
    /// copied while no new frame can come, and the next transaction starts the WAL over.
    var finishThreshold: Int32 { threshold * 4 }

    /// Called by the WAL hook after each commit with the number of frames in the WAL.
    private func walGrew(to frames: Int32) {
        guard frames >= threshold else { return }
        condition.lock()
        pendingFrames = frames
        condition.signal()
        condition.unlock()
    }

    /// Stops the thread after a last checkpoint. The writer must be closed (or its hook gone) first.
    func stop() {
        condition.lock()
        stopping = true
        condition.signal()
        condition.unlock()
        exited.wait()
    }

    private func loop(_ connection: Connection) {
        while true {
            condition.lock()
            while pendingFrames == 0 && !stopping { condition.wait() }
            let stop = stopping
            pendingFrames = 0
            condition.unlock()
            // A failed PASSIVE checkpoint is retried at the next signal; it loses nothing.
            _ = sqlite3_wal_checkpoint_v2(connection.handle, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
            if stop { return }
        }
    }
}
