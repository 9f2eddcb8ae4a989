import EventLog
import Foundation
import Synchronization

/// Progress on stderr: a bar redrawn in place on a terminal, plain lines otherwise (a log file or CI must
/// not fill up with carriage returns).
final class ProgressReporter: Sendable {
    static let shared = ProgressReporter(terminal: isatty(STDERR_FILENO) != 0)

    private struct State {
        var phase = ""
        var lastDraw: ContinuousClock.Instant?
        var barShown = false
    }

    private let terminal: Bool
    private let state = Mutex(State())

    init(terminal: Bool) {
        self.terminal = terminal
    }

    /// Receives the library's reports; it may be called on a SQLite thread.
    var handler: MaintenanceProgressHandler {
        { [self] progress in report(progress) }
    }

    /// Ends the bar's line before the summary is printed.
    func finish() {
        let shown = state.withLock { state -> Bool in
            defer { state.barShown = false }
            return state.barShown
        }
        if shown { write("\n") }
    }

    private func report(_ progress: MaintenanceProgress) {
        let now = ContinuousClock.now
        let line: String? = state.withLock { state in
            let newPhase = progress.phase != state.phase
            let interval: Duration = terminal ? .milliseconds(100) : .seconds(2)
            let done = progress.total.map { progress.completed >= $0 } ?? false
            guard newPhase || done || state.lastDraw.map({ now - $0 >= interval }) ?? true else { return nil }
            var prefix = ""
            if terminal && newPhase && state.barShown { prefix = "\n" }
            state.phase = progress.phase
            state.lastDraw = now
            state.barShown = terminal
            return prefix + (terminal ? bar(progress) : plain(progress))
        }
        if let line { write(line) }
    }

    private func bar(_ progress: MaintenanceProgress) -> String {
        let width = 30
        let counts =
            "\(grouped(progress.completed))" + (progress.total.map { "/\(grouped($0))" } ?? "") + " \(progress.unit)"
        guard let fraction = progress.fraction else {
            return "\r\u{1B}[2K\(progress.phase)" + (progress.completed == 0 ? "..." : ": \(counts)")
                + removed(progress)
        }
        let filled = Int((fraction * Double(width)).rounded(.down))
        let percent = Int((fraction * 100).rounded(.down))
        return "\r\u{1B}[2K\(progress.phase) [\(String(repeating: "#", count: filled))"
            + "\(String(repeating: ".", count: width - filled))] \(percent)% \(counts)" + removed(progress)
    }

    private func plain(_ progress: MaintenanceProgress) -> String {
        if progress.total == nil && progress.completed == 0 { return "\(progress.phase)...\n" }
        let percent = progress.fraction.map { " (\(Int(($0 * 100).rounded(.down)))%)" } ?? ""
        let counts = "\(progress.completed)" + (progress.total.map { "/\($0)" } ?? "")
        return "\(progress.phase): \(counts) \(progress.unit)\(percent)\(removed(progress))\n"
    }

    /// What was removed so far, beside what was examined: the two differ whenever events are kept.
    private func removed(_ progress: MaintenanceProgress) -> String {
        guard let events = progress.removedEvents else { return "" }
        return ", \(progress.dryRun ? "would remove" : "removed") \(grouped(events)) events"
    }

    private func write(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}
