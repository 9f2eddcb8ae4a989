import ArgumentParser
import Foundation
import Testing

@testable import EventLogCommandLine

/// The variable the README's rule gives an option, written out here independently of the tools.
private func variable(_ option: String) -> String {
    "EVENTLOG_" + option.uppercased().replacingOccurrences(of: "-", with: "_")
}

/// The help screens of every command of the three tools.
private let helpScreens: [(tool: String, arguments: [String])] =
    [("eventlogd", ["--help"]), ("eventlog", ["--help"]), ("eventlog-maint", ["--help"])]
    + ["replay", "tail", "publish", "topics", "stats"].map { ("eventlog", [$0, "--help"]) }
    + ["mint", "new-key", "hash-key"].map { ("eventlog", ["token", $0, "--help"]) }
    + ["retain", "compact", "checkpoint", "vacuum", "verify", "backup", "restore", "export", "import", "stats"].map {
        ("eventlog-maint", [$0, "--help"])
    }

/// A help screen's option entries: the long name of each option that takes a value, with its whole entry
/// (label, abstract and its continuation lines) as one line.
private func optionEntries(_ help: String) -> [(name: String, text: String)] {
    var entries: [(name: String, text: String)] = []
    for line in help.split(separator: "\n") {
        if line.hasPrefix("  -") {
            let label = line.dropFirst(2).prefix { $0 != "<" }
            let name = label.split(separator: " ").first { $0.hasPrefix("--") }.map { String($0.dropFirst(2)) }
            entries.append((line.contains("<") ? (name ?? "") : "", String(line)))
        } else if line.hasPrefix(String(repeating: " ", count: 26)), !entries.isEmpty {
            entries[entries.count - 1].text += " " + line.trimmingCharacters(in: .whitespaces)
        }
    }
    return entries.filter { !$0.name.isEmpty }
}

@Suite("What every tool shares: exit statuses, EVENTLOG_* variables, help")
struct ToolConventionTests {
    @Test("a usage error exits 2 with a usage message in every tool; --help and --version exit 0")
    func exitStatuses() throws {
        let daemon = try Run.command("eventlogd", ["--prot", "9000"])
        #expect(daemon.status == 2)
        #expect(
            daemon.stderr == """
                Error: Unknown option '--prot'. Did you mean '--port'?
                Usage: eventlogd <options>
                  See 'eventlogd --help' for more information.

                """)
        #expect(daemon.stdout == "")
        let cli = try Run.command("eventlog", ["replay", "--db", "x.db", "--bogus"])
        #expect(cli.status == 2)
        #expect(cli.stderr.hasPrefix("Error: Unknown option '--bogus'\n"))
        let maint = try Run.command(
            "eventlog-maint", ["compact", "--db", "x.db", "--keep-latest", "--min-age", "soon"])
        #expect(maint.status == 2)
        #expect(maint.stderr.hasPrefix("Error: The value 'soon' is invalid for '--min-age <min-age>'"))
        for tool in ["eventlogd", "eventlog", "eventlog-maint"] {
            let help = try Run.command(tool, ["--help"])
            #expect(help.status == 0, "\(tool) --help")
            #expect(help.stdout.hasPrefix("OVERVIEW: "), "\(tool) --help")
            let version = try Run.command(tool, ["--version"])
            #expect(version.status == 0, "\(tool) --version")
            #expect(version.stdout == "1.0.0\n", "\(tool) --version")
        }
    }

    @Test("--help shows the variable of each option that reads one, by the rule, and no default twice")
    func helpShowsVariables() throws {
        // eventlogd: every option. eventlog: --db, --server and --token. eventlog-maint: --db.
        let reading: [String: Set<String>] = ["eventlog": ["db", "server", "token"], "eventlog-maint": ["db"]]
        var checked = 0
        for (tool, arguments) in helpScreens {
            let help = try Run.command(tool, arguments)
            #expect(help.status == 0)
            for entry in optionEntries(help.stdout) {
                let reads = reading[tool].map { $0.contains(entry.name) } ?? true
                let note = "(env: \(variable(entry.name))"
                #expect(entry.text.contains(note) == reads, "\(tool) \(arguments): \(entry.text)")
                #expect(!(entry.text.contains("Default") && entry.text.contains("(default:")), "\(entry.text)")
                checked += 1
            }
        }
        // Every option with a value in the three tools was looked at: 29 + 44 + 39.
        #expect(checked == 112)
        let daemon = try Run.command("eventlogd", ["--help"]).stdout
        #expect(
            daemon.contains(
                """
                  --port <port>           The port to bind, 0 for any free port. (default:
                                          8080) (env: EVENTLOG_PORT)
                  --db <db>               The database: a SQLite file, created if missing, or a
                                          PostgreSQL URL (postgres://user@host:port/dbname),
                                          whose schema eventlog is created if missing and which
                                          any number of eventlogd nodes may share. (default:
                                          ./data/eventlog.db) (env: EVENTLOG_DB)

                """))
        #expect(
            daemon.contains(
                """
                  --cors-origin <cors-origin>
                                          An origin allowed by CORS, repeatable; '*' allows
                                          all. (default: *) (env: EVENTLOG_CORS_ORIGIN,
                                          comma-separated)
                  --ws-ping <ws-ping>     Seconds between WebSocket pings; a connection that
                                          misses a pong is closed. (default: 30.0) (env:
                                          EVENTLOG_WS_PING)

                """))
        #expect(
            daemon.contains(
                """
                  --tail-events <tail-events>
                                          How many of the newest events to keep in memory;
                                          subscribers further behind read from disk. (default:
                                          16384) (env: EVENTLOG_TAIL_EVENTS)

                """))
        let batch = try Run.command("eventlog-maint", ["retain", "--help"]).stdout
        #expect(
            batch.contains(
                "  --batch-rows <batch-rows>\n                          Events examined per transaction. (default: 200)\n"
            ))
    }

    @Test("a variable sets its option; the command line wins; a bad value is a usage error naming the variable")
    func environment() async throws {
        let fixture = try await Fixture.make()
        defer { fixture.remove() }
        let byFlag = try Run.command("eventlog", ["replay", "--db", fixture.path, "--format", "sse"])
        let byVariable = try Run.command(
            "eventlog", ["replay", "--format", "sse"], environment: ["EVENTLOG_DB": fixture.path])
        #expect(byVariable.status == 0)
        #expect(byVariable.stdout == byFlag.stdout)
        #expect(byVariable.stdout.hasPrefix("id: 1\nevent: created\n"))
        let flagWins = try Run.command(
            "eventlog", ["stats", "--db", fixture.path], environment: ["EVENTLOG_DB": "/nonexistent/other.db"])
        #expect(flagWins.status == 0)
        #expect(flagWins.stdout.hasPrefix("events 4\ntopics 3\n"))
        // --server on the command line is the source: EVENTLOG_DB does not add a second one.
        let other = try Run.command(
            "eventlog", ["stats", "--server", "http://127.0.0.1:1"], environment: ["EVENTLOG_DB": fixture.path])
        #expect(other.status == 1)
        #expect(other.stderr.hasPrefix("eventlog: "))
        let both = try Run.command(
            "eventlog", ["stats"], environment: ["EVENTLOG_DB": fixture.path, "EVENTLOG_SERVER": "http://127.0.0.1:1"])
        #expect(both.status == 2)
        #expect(
            both.stderr.hasPrefix(
                "Error: give exactly one of --db PATH or --server URL (from EVENTLOG_DB, EVENTLOG_SERVER)\n"))
        let maint = try Run.command("eventlog-maint", ["stats", "--json"], environment: ["EVENTLOG_DB": fixture.path])
        #expect(maint.status == 0)
        #expect(maint.stdout.contains("\"events\":4,\"earliest\":1,\"head\":4,\"topics\":3"))
        // An empty variable counts as unset: --db is then missing.
        let empty = try Run.command("eventlog-maint", ["stats"], environment: ["EVENTLOG_DB": ""])
        #expect(empty.status == 2)
        #expect(empty.stderr.hasPrefix("Error: Missing expected argument '--db <db>'\n"))

        let notANumber = try Run.command("eventlogd", [], environment: ["EVENTLOG_PORT": "abc"])
        #expect(notANumber.status == 2)
        #expect(
            notANumber.stderr.hasPrefix("Error: The value 'abc' is invalid for '--port <port>' (from EVENTLOG_PORT)\n"))
        let zero = try Run.command("eventlogd", [], environment: ["EVENTLOG_TAIL_EVENTS": "0"])
        #expect(zero.status == 2)
        #expect(
            zero.stderr == """
                Error: --tail-events must be positive (from EVENTLOG_TAIL_EVENTS)
                Usage: eventlogd <options>
                  See 'eventlogd --help' for more information.

                """)
        // The flag replaces the bad variable, so the only error left is the flag's own (and no server starts).
        let flagBeatsVariable = try Run.command(
            "eventlogd", ["--tail-events", "5", "--port=-1"], environment: ["EVENTLOG_TAIL_EVENTS": "0"])
        #expect(flagBeatsVariable.status == 2)
        #expect(flagBeatsVariable.stderr.hasPrefix("Error: --port must not be negative\n"))
    }

    @Test("topics --format takes jsonl or table; sse is refused as a usage error")
    func topicsFormat() async throws {
        let fixture = try await Fixture.make()
        defer { fixture.remove() }
        let sse = try Run.command("eventlog", ["topics", "--db", fixture.path, "--format", "sse"])
        #expect(sse.status == 2)
        #expect(
            sse.stderr.hasPrefix(
                "Error: The value 'sse' is invalid for '--format <format>'. Please provide one of 'jsonl' and 'table'.\n"
            ))
        #expect(sse.stdout == "")
        let help = try Run.command("eventlog", ["topics", "--help"])
        #expect(
            help.stdout.contains(
                """
                  --format <format>       Output format. Default: table on a terminal, jsonl
                                          otherwise. (values: jsonl, table)

                """))
        let table = try Run.command("eventlog", ["topics", "--db", fixture.path, "--format", "table"])
        #expect(table.status == 0)
        #expect(table.stdout.hasPrefix("topic     count  last_id\n"))
    }
}

/// The rule and the command-line preparation, on a small command.
struct Sample: ParsableCommand {
    static let configuration = CommandConfiguration(subcommands: [Serve.self])

    struct Serve: ParsableCommand {
        @Option var maxBodyBytes = 10
        @Option var origin: [String] = []
        @Option(name: [.customShort("n"), .long]) var lines = 1
        @Flag var verbose = false
        @Argument var rest: [String] = []
    }
}

@Suite("OptionEnvironment: the variable rule and how variables reach the parser")
struct OptionEnvironmentTests {
    let tool = DeclaredCommand.tree(of: Sample.self)

    @Test("the rule: EVENTLOG_ and the long name upper-cased, dashes as underscores")
    func rule() {
        #expect(OptionEnvironment.variableName(forOption: "max-body-bytes") == "EVENTLOG_MAX_BODY_BYTES")
        #expect(OptionEnvironment.variableName(forOption: "db") == "EVENTLOG_DB")
    }

    @Test("variables fill the options the command line leaves out, after the subcommand, before --")
    func prepare() {
        let variables = [
            "EVENTLOG_MAX_BODY_BYTES": "-5", "EVENTLOG_ORIGIN": "a, b,,c", "EVENTLOG_LINES": "7",
            "EVENTLOG_VERBOSE": "1",
        ]
        let prepared = OptionEnvironment.allOptions.prepare(
            ["serve", "--lines=3", "--", "--origin"], tool: tool, variables: variables)
        #expect(
            prepared.arguments == [
                "serve", "--max-body-bytes=-5", "--origin=a", "--origin=b", "--origin=c", "--lines=3", "--",
                "--origin",
            ])
        #expect(prepared.fromEnvironment.map(\.variable) == ["EVENTLOG_MAX_BODY_BYTES", "EVENTLOG_ORIGIN"])
        let short = OptionEnvironment.allOptions.prepare(["serve", "-n", "2"], tool: tool, variables: variables)
        #expect(
            short.arguments == ["serve", "--max-body-bytes=-5", "--origin=a", "--origin=b", "--origin=c", "-n", "2"])
        let chosen = OptionEnvironment.options(["lines"]).prepare(["serve"], tool: tool, variables: variables)
        #expect(chosen.arguments == ["serve", "--lines=7"])
        let alternatives = OptionEnvironment.options(["lines", "origin"], alternatives: true)
        #expect(
            alternatives.prepare(["serve", "--origin", "x"], tool: tool, variables: variables).arguments == [
                "serve", "--origin", "x",
            ])
        // The prepared line parses like a typed one.
        let parsed = try? Sample.parseAsRoot(chosen.arguments) as? Sample.Serve
        #expect(parsed?.lines == 7)
    }

    @Test("help: the note joins the entry's text and wraps as ArgumentParser wraps it")
    func helpNote() {
        let help = Sample.helpMessage(for: Sample.Serve.self, columns: 60)
        let annotated = OptionEnvironment.options(["max-body-bytes", "origin"]).annotateHelp(
            help, tool: tool, width: 60)
        #expect(
            annotated.contains(
                """
                  --max-body-bytes <max-body-bytes>
                                          (default: 10) (env:
                                          EVENTLOG_MAX_BODY_BYTES)
                  --origin <origin>       (env: EVENTLOG_ORIGIN,
                                          comma-separated)
                  -n, --lines <lines>     (default: 1)

                """))
        // Everything else is ArgumentParser's own text.
        #expect(annotated.replacingOccurrences(of: "\n", with: " ").contains("--verbose"))
        #expect(annotated.count(where: { $0 == "\n" }) == help.count(where: { $0 == "\n" }) + 2)
    }
}
