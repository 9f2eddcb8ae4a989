import ArgumentParser
import Foundation

/// Which options of a tool can also be set through the environment, and the one rule that names the
/// variable: `--max-body-bytes` is `EVENTLOG_MAX_BODY_BYTES`.
///
/// The values are put on the command line before parsing (`--max-body-bytes=VALUE`), so they go through
/// exactly the parsing and validation a flag gets; a flag on the command line wins. Only options that take a
/// value read the environment: a flag (an on/off switch) never does.
public struct OptionEnvironment: Sendable {
    private enum Selection: Sendable {
        case all
        case named(Set<String>)
    }

    private let selection: Selection
    /// Options that are ways to say one thing: naming one on the command line keeps the environment from
    /// supplying the others.
    private let alternatives: Set<String>

    /// Every option that takes a value.
    public static let allOptions = OptionEnvironment(selection: .all, alternatives: [])

    /// Only the options with these long names (without the dashes). With `alternatives`, they are ways to
    /// say one thing (`--db` or `--server`): naming one of them on the command line keeps the environment
    /// from supplying the others.
    public static func options(_ longNames: Set<String>, alternatives: Bool = false) -> OptionEnvironment {
        OptionEnvironment(selection: .named(longNames), alternatives: alternatives ? longNames : [])
    }

    /// Only the options with these long names, of which `alternatives` are ways to say one thing: naming one
    /// of those on the command line keeps the environment from supplying the other alternatives, while the
    /// rest of `longNames` (`--token` beside `--db` or `--server`) still read their variables.
    public static func options(_ longNames: Set<String>, alternatives: Set<String>) -> OptionEnvironment {
        OptionEnvironment(selection: .named(longNames), alternatives: alternatives)
    }

    /// The prefix of every variable.
    public static let prefix = "EVENTLOG_"

    /// The variable for the option `--<longName>`: the prefix, then the name upper-cased with dashes as
    /// underscores.
    public static func variableName(forOption longName: String) -> String {
        prefix + longName.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    /// The rule in a sentence, for the tools' discussions.
    public static let ruleDescription = """
        An option marked (env: \(prefix)...) can also be set with that variable: \(prefix) and the option's \
        name upper-cased, dashes as underscores (--max-body-bytes is \(variableName(forOption: "max-body-bytes"))). \
        A flag on the command line wins; a repeatable option takes a comma-separated list; an empty variable \
        counts as unset.
        """

    private init(selection: Selection, alternatives: Set<String>) {
        self.selection = selection
        self.alternatives = alternatives
    }

    /// The options of `command` that read the environment.
    func backedOptions(of command: DeclaredCommand) -> [DeclaredArgument] {
        (command.arguments ?? []).filter { argument in
            guard argument.kind == "option", let name = argument.longName else { return false }
            switch selection {
            case .all: return true
            case .named(let names): return names.contains(name)
            }
        }
    }

    /// The command line with the environment's values for the options the invoked command declares and the
    /// command line does not give, inserted right after the subcommand names.
    func prepare(
        _ commandLine: [String], tool: DeclaredCommand, variables: [String: String]
    ) -> PreparedCommandLine {
        var command = tool
        var pathEnd = 0
        while pathEnd < commandLine.count, let subcommand = command.subcommand(named: commandLine[pathEnd]) {
            command = subcommand
            pathEnd += 1
        }
        // Everything after `--` is a positional value, never an option.
        let given = commandLine[pathEnd...].prefix { $0 != "--" }
        let options = backedOptions(of: command)
        let alternativeGiven = options.contains { option in
            option.longName.map(alternatives.contains) == true && option.isGiven(in: given)
        }
        var added: [String] = []
        var used: [PreparedCommandLine.Origin] = []
        for option in options where !option.isGiven(in: given) {
            guard let name = option.longName, !(alternativeGiven && alternatives.contains(name)) else { continue }
            let variable = Self.variableName(forOption: name)
            guard let value = variables[variable], !value.isEmpty else { continue }
            let values =
                option.isRepeating
                ? value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                : [value]
            // `--name=value`, so that a value starting with a dash is still read as the value.
            added += values.map { "--\(name)=\($0)" }
            used.append(PreparedCommandLine.Origin(option: name, variable: variable))
        }
        return PreparedCommandLine(
            arguments: Array(commandLine[..<pathEnd]) + added + commandLine[pathEnd...],
            fromEnvironment: used)
    }

    /// Adds `(env: VARIABLE)` to the help of every option in `help` (a help screen rendered `width` columns
    /// wide) that reads the environment, and wraps that entry again as ArgumentParser would.
    func annotateHelp(_ help: String, tool: DeclaredCommand, width: Int) -> String {
        var repeating: [String: Bool] = [:]
        tool.forEach { command in
            for option in backedOptions(of: command) {
                if let name = option.longName { repeating[name] = option.isRepeating }
            }
        }
        let lines = help.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var output: [String] = []
        var index = 0
        while index < lines.count {
            let line = lines[index]
            index += 1
            guard let entry = HelpEntry(line), let name = entry.longNames.first(where: { repeating[$0] != nil }) else {
                output.append(line)
                continue
            }
            var abstract = entry.abstractStart.map { [$0] } ?? []
            while index < lines.count, HelpEntry.isAbstractContinuation(lines[index]) {
                abstract.append(String(lines[index].dropFirst(HelpEntry.abstractColumn)))
                index += 1
            }
            let note =
                "(env: \(Self.variableName(forOption: name))\(repeating[name] == true ? ", comma-separated" : ""))"
            output += entry.rendered(abstract: (abstract + [note]).joined(separator: " "), width: width)
        }
        return output.joined(separator: "\n")
    }
}

/// A command line ready for parsing, and which options the environment supplied.
struct PreparedCommandLine {
    /// An option whose value came from the environment.
    struct Origin {
        let option: String
        let variable: String
    }

    let arguments: [String]
    let fromEnvironment: [Origin]

    /// `message` (a usage error, its first line the error itself) with the variables behind the options that
    /// line names, so that a bad value set in the environment is traced to its variable.
    func annotateUsageError(_ message: String) -> String {
        var lines = message.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let first = lines.first else { return message }
        let named = fromEnvironment.filter { Self.mentions(first, option: $0.option) }
        guard !named.isEmpty else { return message }
        lines[0] = first + " (from \(named.map(\.variable).joined(separator: ", ")))"
        return lines.joined(separator: "\n")
    }

    /// Whether `text` names `--option` (and not merely a longer option that starts the same way).
    private static func mentions(_ text: String, option: String) -> Bool {
        var rest = text[...]
        while let range = rest.range(of: "--\(option)") {
            let next = rest[range.upperBound...].first
            if next.map({ !($0.isLetter || $0.isNumber || $0 == "-") }) ?? true { return true }
            rest = rest[range.upperBound...]
        }
        return false
    }
}

/// One option's entry in a help screen, as ArgumentParser lays it out: the label indented by 2, the
/// abstract from column 26 on the same line when the label leaves room, otherwise on the next lines.
private struct HelpEntry {
    static let abstractColumn = 26
    let label: String
    let longNames: [String]
    let abstractStart: String?

    /// Reads an entry's first line; nil unless it is an option's (a label such as `--port <port>`).
    init?(_ line: String) {
        guard line.hasPrefix("  -"), let valueStart = line.range(of: " <"),
            let labelEnd = line[valueStart.upperBound...].firstIndex(of: ">")
        else { return nil }
        let label = line[line.index(line.startIndex, offsetBy: 2)...labelEnd]
        self.label = String(label)
        self.longNames = line[line.index(line.startIndex, offsetBy: 2)..<valueStart.lowerBound]
            .components(separatedBy: ", ")
            .filter { $0.hasPrefix("--") }
            .map { String($0.dropFirst(2)) }
        let tail = line[line.index(after: labelEnd)...]
        let fitsBeside = 2 + label.count < Self.abstractColumn
        self.abstractStart = fitsBeside && !tail.isEmpty ? String(line.dropFirst(Self.abstractColumn)) : nil
    }

    /// A line that continues an entry's abstract: indented to the abstract column.
    static func isAbstractContinuation(_ line: String) -> Bool {
        line.count > abstractColumn && line.prefix(abstractColumn).allSatisfy { $0 == " " }
            && line.dropFirst(abstractColumn).first != " "
    }

    /// The entry with `abstract`, wrapped to `width` columns.
    func rendered(abstract: String, width: Int) -> [String] {
        let padded = "  " + label
        var lines = Self.wrap(abstract, width: width, indent: Self.abstractColumn)
        if padded.count < Self.abstractColumn, let first = lines.first {
            lines[0] = padded + first.dropFirst(padded.count)
        } else {
            lines.insert(padded, at: 0)
        }
        return lines
    }

    /// Wraps `text` at spaces to `width` columns, every line indented by `indent`: the same breaks as
    /// ArgumentParser's own wrapping, so an annotated entry looks like the others.
    static func wrap(_ text: String, width: Int, indent: Int) -> [String] {
        let columns = max(1, width - indent)
        var lines: [Substring] = []
        var rest = text[...]
        while true {
            let chunk = rest.prefix(columns)
            if chunk.endIndex == rest.endIndex {
                lines.append(rest)
                break
            } else if let space = chunk.lastIndex(of: " ") ?? rest.firstIndex(of: " ") {
                lines.append(rest[..<space])
                rest = rest[rest.index(after: space)...]
            } else {
                lines.append(rest)
                break
            }
        }
        return lines.map { $0.isEmpty ? "" : String(repeating: " ", count: indent) + $0 }
    }
}

/// A command as ArgumentParser describes it in `_dumpHelp()` (the JSON behind `--experimental-dump-help`,
/// ToolInfoV0): its subcommands and every argument it declares, option groups included. Reading the
/// declarations from ArgumentParser itself keeps the list of options from drifting from the code.
struct DeclaredCommand: Decodable {
    let commandName: String
    let aliases: [String]?
    let subcommands: [DeclaredCommand]?
    let arguments: [DeclaredArgument]?

    private struct ToolInfo: Decodable {
        let command: DeclaredCommand
    }

    /// The tree of `root`.
    static func tree(of root: any ParsableCommand.Type) -> DeclaredCommand {
        do {
            return try JSONDecoder().decode(ToolInfo.self, from: Data(root._dumpHelp().utf8)).command
        } catch {
            // Only a change in ArgumentParser's JSON can get here, and every test run would show it.
            preconditionFailure("cannot read the declared options from ArgumentParser's dump-help JSON: \(error)")
        }
    }

    func subcommand(named name: String) -> DeclaredCommand? {
        subcommands?.first { $0.commandName == name || ($0.aliases ?? []).contains(name) }
    }

    /// Calls `body` with this command and every command below it.
    func forEach(_ body: (DeclaredCommand) -> Void) {
        body(self)
        for subcommand in subcommands ?? [] { subcommand.forEach(body) }
    }
}

/// An argument as ArgumentParser describes it (ArgumentInfoV0).
struct DeclaredArgument: Decodable {
    struct Name: Decodable {
        let kind: String
        let name: String
    }

    /// `option`, `flag` or `positional`.
    let kind: String
    let names: [Name]?
    let isRepeating: Bool

    var longName: String? { names?.first { $0.kind == "long" }?.name }

    /// Whether the command line (before any `--`) gives this argument, in any of its spellings.
    func isGiven(in arguments: ArraySlice<String>) -> Bool {
        (names ?? []).contains { name in
            switch name.kind {
            case "long":
                return arguments.contains { $0 == "--\(name.name)" || $0.hasPrefix("--\(name.name)=") }
            case "longWithSingleDash":
                return arguments.contains { $0 == "-\(name.name)" || $0.hasPrefix("-\(name.name)=") }
            default:
                // A short name may be grouped (`-fn5`); any single-dash word holding the letter counts, which
                // at worst leaves the variable unread.
                return arguments.contains { $0.hasPrefix("-") && !$0.hasPrefix("--") && $0.contains(name.name) }
            }
        }
    }
}
