import ArgumentParser
import Foundation

/// How every eventlog executable starts: options from the command line and the environment, then the run,
/// with the same exit statuses everywhere: 0 success (`--help` and `--version` too), 1 an error (one line
/// on stderr), 2 a usage error. ArgumentParser's own status for a usage error is 64 (`EX_USAGE`).
public enum CommandLineTool {
    /// The version every tool reports with `--version`.
    public static let version = "1.0.0"

    /// Parses the command line (with `environment`'s variables) for `root`, runs the command, and exits.
    ///
    /// - Parameter describe: One line for an error from running the command, without the tool's name.
    public static func main(
        _ root: any ParsableCommand.Type,
        environment: OptionEnvironment,
        describe: (any Error) -> String = { String(describing: $0) }
    ) async -> Never {
        let tool = DeclaredCommand.tree(of: root)
        let prepared = environment.prepare(
            Array(CommandLine.arguments.dropFirst()), tool: tool, variables: ProcessInfo.processInfo.environment)
        do {
            var command = try root.parseAsRoot(prepared.arguments)
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            exit(0)
        } catch let code as ExitCode {
            exit(code == .validationFailure ? 2 : code.rawValue)
        } catch {
            let width = terminalWidth
            switch root.exitCode(for: error) {
            case .success:
                // Help and --version.
                print(environment.annotateHelp(root.fullMessage(for: error, columns: width), tool: tool, width: width))
                exit(0)
            case .validationFailure:
                writeError(prepared.annotateUsageError(root.fullMessage(for: error, columns: width)))
                exit(2)
            default:
                let name = root.configuration.commandName ?? "error"
                let text = describe(error).split(whereSeparator: \.isNewline).joined(separator: " ")
                writeError("\(name): \(text)")
                exit(1)
            }
        }
    }

    private static func exit(_ status: Int32) -> Never {
        Foundation.exit(status)
    }

    private static func writeError(_ text: String) {
        FileHandle.standardError.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
    }

    /// The width ArgumentParser wraps help to (COLUMNS, else the terminal's, else 80), found here too so
    /// that an annotated help entry is wrapped to the same width as the rest.
    private static var terminalWidth: Int {
        if let columns = ProcessInfo.processInfo.environment["COLUMNS"].flatMap({ Int($0) }), columns > 0 {
            return columns
        }
        var size = winsize()
        #if canImport(Glibc)
        let status = ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size)
        #else
        let status = ioctl(STDOUT_FILENO, TIOCGWINSZ, &size)
        #endif
        return status == 0 && size.ws_col > 0 ? Int(size.ws_col) : 80
    }
}
