import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A child process for tests, launched with `posix_spawn`: the part of Foundation's `Process` API the tests
/// use (`executableURL`, `arguments`, `environment`, the three standard streams as a `Pipe` or a `FileHandle`,
/// `run()`, `isRunning`, `waitUntilExit()`, `terminationStatus`, `terminate()`).
///
/// Foundation's `Process.run()` on Linux crashes now and then: to close the parent's descriptors in the child
/// it reads `/proc/self/fd` copying each entry's whole 256-byte `d_name`, past the end of glibc's buffer
/// (swiftlang/swift-corelibs-foundation#5472, not in Swift 6.3.1). The test process holds thousands of sockets
/// at times, which makes that likely: it crashed two runs of the test command. Here the child closes every
/// descriptor above 2 with `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34) instead.
public final class Subprocess: @unchecked Sendable {
    // @unchecked: the launch settings are set before `run()` on one thread; `state` is under `lock`.
    public var executableURL: URL?
    public var arguments: [String]?
    /// The child's environment; `nil` for this process's.
    public var environment: [String: String]?
    /// A `Pipe`, a `FileHandle` (`FileHandle.nullDevice` is `/dev/null`), or `nil` for `/dev/null`.
    ///
    /// Unlike Foundation's `Process`, `nil` does not hand the child this process's own streams: `swift test`
    /// reads the test process's output until every writer has closed it, so a child that outlives a crashed
    /// test process (a `tail -f`, a server) would otherwise keep `swift test` waiting for ever.
    public var standardInput: Any?
    public var standardOutput: Any?
    public var standardError: Any?

    private let lock = NSLock()
    private var pid: pid_t = 0
    private var exitStatus: Int32?

    public init() {}

    public var processIdentifier: Int32 { lock.withLock { pid } }

    public func run() throws {
        guard let path = executableURL?.path else { throw SpawnError(code: EINVAL, what: "no executable") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var closeInParent: [FileHandle] = []
        for (target, stream) in [
            (STDIN_FILENO, standardInput), (STDOUT_FILENO, standardOutput), (STDERR_FILENO, standardError),
        ] {
            switch stream {
            case let pipe as Pipe:
                let (child, _) =
                    target == STDIN_FILENO
                    ? (pipe.fileHandleForReading, pipe.fileHandleForWriting)
                    : (pipe.fileHandleForWriting, pipe.fileHandleForReading)
                posix_spawn_file_actions_adddup2(&actions, child.fileDescriptor, target)
                closeInParent.append(child)
            case let handle as FileHandle where handle !== FileHandle.nullDevice:
                posix_spawn_file_actions_adddup2(&actions, handle.fileDescriptor, target)
            default:
                posix_spawn_file_actions_addopen(
                    &actions, target, "/dev/null", target == STDIN_FILENO ? O_RDONLY : O_WRONLY, 0)
            }
        }
        if let closeFrom = Self.addCloseFrom { _ = closeFrom(&actions, 3) }
        let argv = ([path] + (arguments ?? [])).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let environment = self.environment ?? ProcessInfo.processInfo.environment
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { envp.forEach { free($0) } }
        var child: pid_t = 0
        let code = posix_spawn(&child, path, &actions, nil, argv, envp)
        guard code == 0 else { throw SpawnError(code: code, what: path) }
        lock.withLock { pid = child }
        // The child has its own copies of the pipe ends it uses; without closing ours, a reader of its output
        // would never see the end of it.
        for handle in closeInParent { try? handle.close() }
    }

    public var isRunning: Bool {
        lock.withLock {
            guard pid > 0, exitStatus == nil else { return false }
            var status: Int32 = 0
            let reaped = waitpid(pid, &status, WNOHANG)
            guard reaped == pid else { return reaped == 0 }
            // Exited: the exit code; killed: the signal (as Foundation's `terminationStatus` gives it).
            exitStatus = status & 0x7f == 0 ? (status >> 8) & 0xff : status & 0x7f
            return false
        }
    }

    public func waitUntilExit() {
        while isRunning { usleep(1000) }
    }

    public var terminationStatus: Int32 {
        lock.withLock { exitStatus ?? -1 }
    }

    /// Sends SIGTERM.
    public func terminate() {
        let pid = processIdentifier
        if pid > 0 { kill(pid, SIGTERM) }
    }

    public struct SpawnError: Error, CustomStringConvertible {
        public let code: Int32
        public let what: String
        public var description: String { "posix_spawn failed (\(code)): \(what)" }
    }

    /// `posix_spawn_file_actions_addclosefrom_np`, which the Glibc module does not import.
    private static let addCloseFrom:
        (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
            guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np")
            else { return nil }
            return unsafeBitCast(
                symbol,
                to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
        }()
}
