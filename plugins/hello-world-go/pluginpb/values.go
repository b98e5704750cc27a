package pluginpb

// JSON values <-> map<string, google.protobuf.Any> packing google.protobuf.Value: the Jank
// wire format of Execute's args and data (golang/protobuf 1.3 has no structpb helpers).

import (
	"fmt"

	"github.com/golang/protobuf/ptypes"
	anypb "github.com/golang/protobuf/ptypes/any"
	structpb "github.com/golang/protobuf/ptypes/struct"
)

// Pack turns decoded JSON (nil, bool, float64, string, []interface{}, map[string]interface{}).
func Pack(values map[string]interface{}) (map[string]*anypb.Any, error) {
	packed := make(map[string]*anypb.Any, len(values))
	for key, value := range values {
		v, err := toValue(value)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", key, err)
		}
		a, err := ptypes.MarshalAny(v)
		if err != nil {
			return nil, err
		}
		packed[key] = a
	}
	return packed, nil
}

// Unpack is the inverse of Pack.
func Unpack(packed map[string]*anypb.Any) (map[string]interface{}, error) {
	values := make(map[string]interface{}, len(packed))
	for key, a := range packed {
		var v structpb.Value
		if err := ptypes.UnmarshalAny(a, &v); err != nil {
			return nil, fmt.Errorf("%s: not a google.protobuf.Value: %v", key, err)
		}
		values[key] = fromValue(&v)
	}
	return values, nil
}

func toValue(value interface{}) (*structpb.Value, error) {
	switch v := value.(type) {
	case nil:
		return &structpb.Value{Kind: &structpb.Value_NullValue{NullValue: structpb.NullValue_NULL_VALUE}}, nil
	case bool:
		return &structpb.Value{Kind: &structpb.Value_BoolValue{BoolValue: v}}, nil
	case float64:
		return &structpb.Value{Kind: &structpb.Value_NumberValue{NumberValue: v}}, nil
	case int:
		return &structpb.Value{Kind: &structpb.Value_NumberValue{NumberValue: float64(v)}}, nil
	case string:
		return &structpb.Value{Kind: &structpb.Value_StringValue{StringValue: v}}, nil
	case []interface{}:
		list := &structpb.ListValue{}
		for _, item := range v {
			converted, err := toValue(item)
			if err != nil {
				return nil, err
			}
			list.Values = append(list.Values, converted)
		}
		return &structpb.Value{Kind: &structpb.Value_ListValue{ListValue: list}}, nil
	case map[string]interface{}:
		object := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(v))}
		for key, item := range v {
			converted, err := toValue(item)
			if err != nil {
				return nil, err
			}
			object.Fields[key] = converted
		}
		return &structpb.Value{Kind: &structpb.Value_StructValue{StructValue: object}}, nil
	default:
		return nil, fmt.Errorf("%T is not a JSON value", value)
	}
}

func fromValue(v *structpb.Value) interface{} {
	switch kind := v.Kind.(type) {
	case *structpb.Value_BoolValue:
		return kind.BoolValue
	case *structpb.Value_NumberValue:
		return kind.NumberValue
	case *structpb.Value_StringValue:
		return kind.StringValue
	case *structpb.Value_ListValue:
		items := make([]interface{}, 0, len(kind.ListValue.GetValues()))
		for _, item := range kind.ListValue.GetValues() {
			items = append(items, fromValue(item))
		}
		return items
	case *structpb.Value_StructValue:
		object := make(map[string]interface{}, len(kind.StructValue.GetFields()))
		for key, item := range kind.StructValue.GetFields() {
			object[key] = fromValue(item)
		}
		return object
	default:
		return nil
	}
}
