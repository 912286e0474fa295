#include "slimta/errors.h"

namespace slimta {

KeyError::KeyError(const std::string& id)
    : QueueError("no message with id '" + id + "' in the queue", false), id_(id) {}

}  // namespace slimta
