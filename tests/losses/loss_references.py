"""Float64 helpers shared by the loss tests: distances from their definitions, finite differences."""

import numpy as np


def reference_distance(x, y, distance):
    """Distance between two float64 vectors, straight from its definition."""
    if distance == "cosine":
        return 1 - x @ y / (np.linalg.norm(x) * np.linalg.norm(y))
    squared = np.sum((x - y) ** 2)
    return squared if distance == "squared_euclidean" else np.sqrt(squared)


def numeric_gradients(function, arrays, step=1e-6):
    """Central finite differences of ``function(*arrays)`` with respect to every array."""
    gradients = []
    for array in arrays:
        gradient = np.zeros_like(array)
        for index in np.ndindex(*array.shape):
            original = array[index]
            array[index] = original + step
            upper = function(*arrays)
            array[index] = original - step
            lower = function(*arrays)
            array[index] = original
            gradient[index] = (upper - lower) / (2 * step)
        gradients.append(gradient)
    return gradients
