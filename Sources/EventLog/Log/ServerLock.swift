import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The claim of one server process on a database file: a lock file beside it (`DB.lock`) holding an
/// exclusive `flock(2)` for the process's life, and the process id for the message a second server
/// prints.
///
/// Only one `eventlogd` may serve a file: its in-memory tail and its subscribers' wake-ups follow
/// its own commits, and a second server would have to discover the other's commits by polling.
/// Tools (`eventlog publish --db`, `eventlog-maint`) do not take the lock; the server notices their
/// commits (``EventLog/Options/foreignWritePollInterval``).
///
/// The kernel drops the `flock` when the process dies, even by SIGKILL, so a stale file left by a
/// crash never blocks the next start. A clean release unlinks the file; a process that opened the
/// file just before the unlink would lock an orphaned inode, so the lock is retried until the locked
/// file is the one at the path.
public final class ServerLock: Sendable {
    /// The lock file's path.
    public let path: String
    private let descriptor: Int32

    /// Another process holds the lock.
    public struct Held: Error, CustomStringConvertible {
        /// The holder's process id, as it wrote it (nil when the file holds none yet).
        public let pid: Int32?
        /// The database file.
        public let databasePath: String

        public var description: String {
            "another eventlogd (pid \(pid.map(String.init) ?? "unknown")) is serving \(databasePath)"
        }
    }

    /// The lock file for a database file.
    public static func lockPath(forDatabase databasePath: String) -> String { databasePath + ".lock" }

    /// Takes the lock for `databasePath`, or throws ``Held`` when another process has it. The
    /// database's directory must exist.
    public init(databasePath: String) throws {
        let path = Self.lockPath(forDatabase: databasePath)
        self.path = path
        while true {
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw Self.systemError("cannot open \(path)") }
            if flock(fd, LOCK_EX | LOCK_NB) != 0 {
                let code = errno
                let pid = Self.readPID(fd)
                close(fd)
                if code == EWOULDBLOCK { throw Held(pid: pid, databasePath: databasePath) }
                errno = code
                throw Self.systemError("cannot lock \(path)")
            }
            // The holder before us may have unlinked the file between our open and our flock.
            var opened = stat()
            var atPath = stat()
            if fstat(fd, &opened) == 0, stat(path, &atPath) == 0, opened.st_ino == atPath.st_ino,
                opened.st_dev == atPath.st_dev
            {
                descriptor = fd
                break
            }
            close(fd)
        }
        let text = Array("\(getpid())\n".utf8)
        if ftruncate(descriptor, 0) != 0 || pwrite(descriptor, text, text.count, 0) != text.count {
            let error = Self.systemError("cannot write \(path)")
            close(descriptor)
            throw error
        }
    }

    /// Removes the lock file and drops the lock. Call once, when the server has closed the log.
    public func release() {
        // Unlink before unlocking: a process waiting to lock sees the path gone and starts over.
        unlink(path)
        close(descriptor)
    }

    private static func readPID(_ fd: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = pread(fd, &buffer, buffer.count, 0)
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[0..<count], as: UTF8.self)
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    private static func systemError(_ message: String) -> EventLogError {
        EventLogError(.storageUnavailable, "\(message): \(String(cString: strerror(errno)))")
    }
}
