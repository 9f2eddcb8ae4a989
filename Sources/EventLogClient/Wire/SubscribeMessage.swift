/// The WebSocket `subscribe` message this client sends.
enum SubscribeMessage {
    /// `{"op":"subscribe","topics":[..],"resume":..}` or `..,"from":..}`.
    static func text(topics: [String], start: WebSocketStart) -> String {
        var writer = JSONWriter()
        writer.raw("[")
        for (offset, topic) in topics.enumerated() {
            if offset > 0 { writer.raw(",") }
            writer.string(topic)
        }
        writer.raw("]")
        let position: JSONFragment
        switch start {
        case .resume: position = .omitted
        case .from(let id): position = .int(id)
        case .earliest: position = .string("earliest")
        case .latest: position = .string("latest")
        }
        let resume: JSONFragment
        if case .resume(let token) = start {
            resume = .string(token)
        } else {
            resume = .omitted
        }
        return JSONWriter.object([
            "op": .string("subscribe"), "topics": .raw(writer.text), "resume": resume, "from": position,
        ])
    }
}
